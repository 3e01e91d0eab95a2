// CausalPETS networks: parameter counts of the full and demo presets against the figures of
// docs/model.md (full) and tools/torch_model.py --count (demo); output shapes of the tiny preset;
// configuration validation and JSON; ablation switches; seeded initialisation.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "models/causal_pets.h"

using namespace cpets;
using namespace cpets::models;

TEST_CASE("full preset parameter counts equal model.md's") {
  Generator init(0);
  const CausalPETS model(model_preset("full"), init);
  const ParameterCounts c = count_parameters(model);
  CHECK(c.t1_decoder == 1808321);
  CHECK(c.discriminator == 2642753);
  CHECK(c.encoder == 6217478);
  CHECK(c.encoder_demographics == 83200);
  CHECK(c.encoder_transformer == 346752);
  CHECK(c.fusion == 83328);
  CHECK(c.pet_generator == 2055201);
  CHECK(c.total == 1808321 + 2642753 + 6217478 + 83328 + 2055201);
  // AV1451 has two CSF inputs: f's first layer gains one input column.
  Generator init2(0);
  const CausalPETS tau(model_preset("full", "AV1451"), init2);
  CHECK(count_parameters(tau).fusion == 83328 + 128);
}
