#include "eval/inference.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>
#include <stdexcept>

#include "engine/autograd.h"

namespace cpets::eval {

namespace {

std::string known_variables() {
  std::string s;
  for (const auto& v : intervention_variables()) s += (s.empty() ? "" : ", ") + v;
  return s;
}

double parse_number(const std::string& text, const std::string& variable) {
  const char* begin = text.c_str();
  char* end = nullptr;
  const double v = std::strtod(begin, &end);
  if (text.empty() || end != begin + text.size() || !std::isfinite(v))
    throw std::invalid_argument("--do " + variable + "=" + text + ": '" + text + "' is not a number");
  return v;
}

void check_value(const Assignment& a, const std::string& text) {
  const std::string where = "--do " + text;
  using Op = Assignment::Op;
  if (a.op == Op::scale && !(is_csf_variable(a.variable) || a.variable == "age" || a.variable == "education"))
    throw std::invalid_argument(where + ": " + a.variable + " cannot be scaled; set it (" + a.variable +
                                "=…) or shift it (" + a.variable + "+1)");
  if (a.op == Op::scale && !(a.value >= 0)) throw std::invalid_argument(where + ": a factor must be ≥ 0");
  if (a.variable == "sex" && a.op != Op::set) throw std::invalid_argument(where + ": sex is set (sex=0 or sex=1), not shifted");
  if (a.variable == "apoe4" && a.op == Op::add && a.value != std::round(a.value))
    throw std::invalid_argument(where + ": APOE4 is an allele count; shift it by a whole number (apoe4-1, apoe4+1)");
  if (a.op != Op::set) return;
  if (a.variable == "sex" && a.value != 0 && a.value != 1)
    throw std::invalid_argument("--do sex=…: sex is 0 (female) or 1 (male)");
  if (a.variable == "apoe4" && a.value != 0 && a.value != 1 && a.value != 2)
    throw std::invalid_argument("--do apoe4=…: APOE4 is the ε4 allele count, 0, 1 or 2");
  if (is_csf_variable(a.variable) && a.value < 0) throw std::invalid_argument(where + ": a CSF concentration cannot be negative");
  if ((a.variable == "age" || a.variable == "education") && a.value < 0)
    throw std::invalid_argument(where + ": must be ≥ 0");
}

Tensor to_tensor(const std::vector<float>& v) { return Tensor::from_vector({1, int64_t(v.size())}, v); }

}  // namespace

bool is_csf_variable(const std::string& v) { return v == "abeta" || v == "tau" || v == "ptau"; }

const std::vector<std::string>& intervention_variables() {
  static const std::vector<std::string> v = {"age", "sex", "apoe4", "education", "abeta", "tau", "ptau"};
  return v;
}

Intervention parse_intervention(const std::string& text) {
  Intervention iv;
  iv.name = text;
  if (text.empty()) throw std::invalid_argument("--do needs VARIABLE=VALUE, e.g. --do apoe4=0 (variables: " + known_variables() + ")");
  std::set<std::string> seen;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const std::string part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const size_t op = part.find_first_of("=+-*");
    if (op == std::string::npos || op == 0)
      throw std::invalid_argument("--do " + text + ": '" + part +
                                  "' is not VARIABLE=VALUE, VARIABLE+AMOUNT, VARIABLE-AMOUNT or VARIABLE*FACTOR (e.g. "
                                  "apoe4=0, apoe4-1, abeta*0.5; variables: " + known_variables() + ")");
    Assignment a;
    a.variable = part.substr(0, op);
    for (auto& c : a.variable) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (a.variable == "pteducat") a.variable = "education";
    bool known = false;
    for (const auto& v : intervention_variables()) known = known || v == a.variable;
    if (!known)
      throw std::invalid_argument("--do " + text + ": unknown variable '" + part.substr(0, op) + "' (known: " +
                                  known_variables() + ")");
    if (!seen.insert(a.variable).second)
      throw std::invalid_argument("--do " + text + ": " + a.variable + " is set twice");
    a.value = parse_number(part.substr(op + 1), a.variable);
    switch (part[op]) {
      case '+': a.op = Assignment::Op::add; break;
      case '-': a.op = Assignment::Op::add, a.value = -a.value; break;
      case '*': a.op = Assignment::Op::scale; break;
      default: a.op = Assignment::Op::set;
    }
    check_value(a, text);
    iv.set.push_back(a);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return iv;
}

void check_intervention_for_tracer(const Intervention& iv, const std::string& tracer) {
  for (const auto& a : iv.set) {
    if (a.variable == "abeta" && tracer != "AV45")
      throw std::invalid_argument("--do " + iv.name + ": abeta is not an input of the " + tracer +
                                  " model (its B_CSF is TAU and PTAU); intervene on tau or ptau");
    if ((a.variable == "tau" || a.variable == "ptau") && tracer != "AV1451")
      throw std::invalid_argument("--do " + iv.name + ": " + a.variable + " is not an input of the " + tracer +
                                  " model (its B_CSF is ABETA); intervene on abeta");
  }
}

std::optional<io::PairedRecord> apply_intervention(io::PairedRecord r, const Intervention& iv) {
  auto change = [](const Assignment& a, double now) {
    switch (a.op) {
      case Assignment::Op::add: return now + a.value;
      case Assignment::Op::scale: return now * a.value;
      default: return a.value;
    }
  };
  auto csf = [&](const Assignment& a, io::CsfValue& c) {
    c.value = change(a, c.value);
    c.raw = std::to_string(c.value);
    c.censored = io::Censor::none;
    return c.value >= 0;
  };
  for (const auto& a : iv.set) {
    bool possible = true;
    if (a.variable == "age") r.age = change(a, r.age), possible = r.age >= 0;
    else if (a.variable == "sex") r.sex = int(a.value);
    else if (a.variable == "apoe4") r.apoe4 = int(std::lround(change(a, r.apoe4))), possible = r.apoe4 >= 0 && r.apoe4 <= 2;
    else if (a.variable == "education") r.pteducat = change(a, r.pteducat), possible = r.pteducat >= 0;
    else if (a.variable == "abeta") possible = csf(a, r.abeta);
    else if (a.variable == "tau") possible = csf(a, r.tau);
    else if (a.variable == "ptau") possible = csf(a, r.ptau);
    if (!possible) return std::nullopt;
  }
  return r;
}

std::string intervention_folder(const Intervention& iv) {
  std::string s = "do_" + iv.name;
  for (auto& c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '=' || c == '.' || c == '_' || c == '-')) c = '_';
  return s;
}

TabularInputs tabular_inputs(const io::PairedRecord& r, const io::NormRanges& ranges, const std::string& tracer) {
  if (r.tracer != tracer)
    throw std::invalid_argument("session " + r.subject + " is " + r.tracer + " but the model was trained on " + tracer);
  return {io::csf_inputs(r, ranges), io::covariate_inputs(r, ranges)};
}

Synthesiser::Synthesiser(std::shared_ptr<const models::SynthesisModel> model) : model_(std::move(model)) {
  if (!model_) throw std::invalid_argument("Synthesiser: no model");
}

models::Abduction Synthesiser::abduct(const io::Volume& t1, const std::vector<float>& covariates) const {
  const auto& v = model_->config().volume;
  if (t1.shape != v)
    throw std::invalid_argument("inference: the T1 is " + io::shape_string(t1.shape) + " but the model takes " +
                                io::shape_string(v) + "; prepare it with train::prepare_volume (pad/crop)");
  NoGradGuard no_grad;
  const Device d = model_->device();
  return model_->abduct(Tensor::from_vector({1, 1, v[0], v[1], v[2]}, t1.data, d), to_tensor(covariates).to(d));
}

io::Volume Synthesiser::synthesise(const models::Abduction& s, const TabularInputs& tab, const io::Volume& grid) const {
  NoGradGuard no_grad;
  const Device d = model_->device();
  const Tensor pet = model_->synthesise(s, to_tensor(tab.csf).to(d), to_tensor(tab.covariates).to(d)).to(Device::cpu());
  io::Volume out = io::make_volume(grid.shape, 0.f, grid.affine);
  if (pet.numel() != out.numel())
    throw std::logic_error("inference: G_P produced " + pet.str() + " for a " + io::shape_string(grid.shape) + " grid");
  std::memcpy(out.data.data(), pet.data(), sizeof(float) * size_t(out.numel()));
  return out;
}

io::Volume Synthesiser::synthesise(const io::Volume& t1, const TabularInputs& tab) const {
  return synthesise(abduct(t1, tab.covariates), tab, t1);
}

io::Volume difference(const io::Volume& counterfactual, const io::Volume& factual) {
  if (counterfactual.shape != factual.shape)
    throw std::invalid_argument("difference: " + io::shape_string(counterfactual.shape) + " vs " +
                                io::shape_string(factual.shape));
  io::Volume d = counterfactual;
  for (size_t i = 0; i < d.data.size(); ++i) d.data[i] -= factual.data[i];
  return d;
}

}  // namespace cpets::eval
