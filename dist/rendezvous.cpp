#include "dist/rendezvous.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

namespace cpets::dist {
namespace {

using Clock = std::chrono::steady_clock;

class Socket {
 public:
  explicit Socket(int fd = -1) : fd_(fd) {}
  ~Socket() { if (fd_ >= 0) ::close(fd_); }
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept { std::swap(fd_, o.fd_); return *this; }
  int fd() const { return fd_; }
 private:
  int fd_;
};

double seconds_left(Clock::time_point deadline) {
  return std::chrono::duration<double>(deadline - Clock::now()).count();
}

// Waits until fd is readable (or writable) or the deadline passes.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  while (true) {
    const double left = seconds_left(deadline);
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(std::min(left * 1000.0, 1000.0)) + 1);
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return false;
  }
}

// Moves all n bytes through fd, sending or receiving, before the deadline; false if it cannot.
bool transfer(int fd, char* p, size_t n, bool sending, Clock::time_point deadline) {
  while (n > 0) {
    if (!wait_fd(fd, sending ? POLLOUT : POLLIN, deadline)) return false;
    const ssize_t k = sending ? ::send(fd, p, n, MSG_NOSIGNAL) : ::recv(fd, p, n, 0);
    if (k <= 0) {
      if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      return false;
    }
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}
bool send_all(int fd, const void* data, size_t n, Clock::time_point deadline) {
  return transfer(fd, static_cast<char*>(const_cast<void*>(data)), n, true, deadline);
}
bool recv_all(int fd, void* data, size_t n, Clock::time_point deadline) {
  return transfer(fd, static_cast<char*>(data), n, false, deadline);
}

std::string endpoint(const LaunchInfo& l) { return l.master_addr + ":" + std::to_string(l.master_port); }

// Rank 0: accept world − 1 peers, each announcing its rank, then send every one the verdict
// (0 + blob, or 1 + the reason) so that no rank waits on its own when one is missing.
std::string serve(const LaunchInfo& l, const std::string& blob, Clock::time_point deadline) {
  Socket listener(::socket(AF_INET6, SOCK_STREAM, 0));
  if (listener.fd() < 0) throw std::runtime_error("rendezvous: socket() failed: " + std::string(std::strerror(errno)));
  const int on = 1, off = 0;
  ::setsockopt(listener.fd(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  ::setsockopt(listener.fd(), IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);  // IPv4 peers too
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_any;
  addr.sin6_port = htons(static_cast<uint16_t>(l.master_port));
  if (::bind(listener.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listener.fd(), 64) != 0)
    throw std::runtime_error("rendezvous: rank 0 cannot listen on port " + std::to_string(l.master_port) + " (" +
                             std::strerror(errno) + "); choose another MASTER_PORT");
  std::vector<Socket> peers(static_cast<size_t>(l.world));
  int joined = 1;
  while (joined < l.world && wait_fd(listener.fd(), POLLIN, deadline)) {
    Socket peer(::accept(listener.fd(), nullptr, nullptr));
    if (peer.fd() < 0) continue;
    int32_t rank = -1;
    if (!recv_all(peer.fd(), &rank, sizeof rank, deadline)) continue;
    if (rank <= 0 || rank >= l.world || peers[static_cast<size_t>(rank)].fd() >= 0) {
      const char refuse = 2;  // a duplicate or impossible rank: tell it, keep waiting for the real one
      send_all(peer.fd(), &refuse, 1, deadline);
      continue;
    }
    peers[static_cast<size_t>(rank)] = std::move(peer);
    ++joined;
  }
  std::string missing;
  for (int r = 1; r < l.world; ++r)
    if (peers[static_cast<size_t>(r)].fd() < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
  const std::string reason = missing.empty() ? "" : "rank(s) " + missing + " of " + std::to_string(l.world) +
                                                        " did not reach rank 0 at " + endpoint(l) + " in time";
  const auto send_deadline = Clock::now() + std::chrono::seconds(10);
  for (int r = 1; r < l.world; ++r) {
    const int fd = peers[static_cast<size_t>(r)].fd();
    if (fd < 0) continue;
    const char status = reason.empty() ? 0 : 1;
    const std::string& text = reason.empty() ? blob : reason;
    const uint64_t n = text.size();
    send_all(fd, &status, 1, send_deadline) && send_all(fd, &n, sizeof n, send_deadline) &&
        send_all(fd, text.data(), text.size(), send_deadline);
  }
  if (!reason.empty())
    throw std::runtime_error("rendezvous: " + reason + "; check that every rank was started with the same MASTER_ADDR, "
                             "MASTER_PORT and WORLD_SIZE, or raise CPETS_DIST_TIMEOUT");
  return blob;
}

Socket dial(const LaunchInfo& l, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  std::string last_error = "no attempt";
  while (seconds_left(deadline) > 0) {
    addrinfo* res = nullptr;
    const int rc = ::getaddrinfo(l.master_addr.c_str(), std::to_string(l.master_port).c_str(), &hints, &res);
    if (rc != 0) {
      last_error = ::gai_strerror(rc);
    } else {
      for (addrinfo* a = res; a; a = a->ai_next) {
        Socket s(::socket(a->ai_family, a->ai_socktype, a->ai_protocol));
        if (s.fd() >= 0 && ::connect(s.fd(), a->ai_addr, a->ai_addrlen) == 0) {
          ::freeaddrinfo(res);
          return s;
        }
        last_error = std::strerror(errno);
      }
      ::freeaddrinfo(res);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // rank 0 may not listen yet
  }
  throw std::runtime_error("rendezvous: rank " + std::to_string(l.rank) + " could not reach rank 0 at " + endpoint(l) +
                           " in time (" + last_error + "); check MASTER_ADDR/MASTER_PORT and that rank 0 started, "
                           "or raise CPETS_DIST_TIMEOUT");
}

std::string join(const LaunchInfo& l, Clock::time_point deadline) {
  Socket s = dial(l, deadline);
  const int32_t rank = l.rank;
  // Rank 0 answers once every rank joined, or at its own deadline: give it a little longer.
  const auto answer_deadline = deadline + std::chrono::seconds(15);
  char status = 0;
  uint64_t n = 0;
  if (!send_all(s.fd(), &rank, sizeof rank, deadline) || !recv_all(s.fd(), &status, 1, answer_deadline))
    throw std::runtime_error("rendezvous: rank " + std::to_string(l.rank) + " lost rank 0 at " + endpoint(l) +
                             " before every rank had joined; see rank 0's message");
  if (status == 2)
    throw std::runtime_error("rendezvous: rank 0 at " + endpoint(l) + " already has a rank " + std::to_string(l.rank) +
                             "; every process needs its own RANK");
  if (!recv_all(s.fd(), &n, sizeof n, answer_deadline) || n > (1u << 20))
    throw std::runtime_error("rendezvous: a malformed answer from " + endpoint(l));
  std::string text(n, '\0');
  if (!recv_all(s.fd(), text.data(), n, answer_deadline))
    throw std::runtime_error("rendezvous: rank 0 at " + endpoint(l) + " closed the connection mid-answer");
  if (status == 1) throw std::runtime_error("rendezvous (rank " + std::to_string(l.rank) + "): " + text);
  return text;
}

}  // namespace

double join_timeout_seconds() {
  const char* v = std::getenv("CPETS_DIST_TIMEOUT");
  if (!v || !*v) return 300.0;
  char* end = nullptr;
  const double t = std::strtod(v, &end);
  if (*end != '\0' || !(t > 0))
    throw std::runtime_error(std::string("environment variable CPETS_DIST_TIMEOUT=\"") + v +
                             "\" is not a positive number of seconds");
  return t;
}

std::string rendezvous_broadcast(const LaunchInfo& launch, const std::string& blob, double timeout_s) {
  if (launch.world == 1) return blob;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  return launch.rank == 0 ? serve(launch, blob, deadline) : join(launch, deadline);
}

}  // namespace cpets::dist
