// Training configurations: TOML parsing over the defaults, errors that name the line and key,
// command-line overrides, validation, and the resolved TOML round trip.
#include <gtest/gtest.h>

#include "mpsim/config.h"

namespace mpsim {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Config, ParsesSectionsOverTheDefaults) {
  const TrainConfig c = parse_config(R"(
[run]
name = "lenet"
seed = 42

[model]
arch = "resnet20"
shortcut = "b"

[precision]
mac = "in=e5m2:cfg5 prod=exact acc=e6m5"

[optim]
lr = 0.1            # an integer would do too
nesterov = true

[schedule]
name = "multistep"
milestones = [30, 60]
)", "t.toml");
  EXPECT_EQ(c.name, "lenet");
  EXPECT_EQ(c.seed, 42u);
  EXPECT_EQ(c.model.arch, "resnet20");
  EXPECT_EQ(c.model.shortcut, 'B');
  EXPECT_EQ(c.lr, 0.1);
  EXPECT_TRUE(c.nesterov);
  EXPECT_EQ(c.milestones, (std::vector<std::size_t>{30, 60}));
  EXPECT_EQ(c.batch_size, TrainConfig{}.batch_size);  // untouched keys keep their defaults
  const GemmPrecision p = gemm_precision(c);
  ASSERT_TRUE(p.fwd && p.bwd && p.grad);
  EXPECT_EQ(p.fwd->to_string(), MacSpec::parse("in=e5m2:cfg5 prod=exact acc=e6m5").to_string());
  EXPECT_NO_THROW(validate(c));
  EXPECT_EQ(parse_config("[optim]\nlr = 1\n", "t").lr, 1.0);
}

TEST(Config, ErrorsNameTheFileLineAndKey) {
  EXPECT_EQ(error_of([] { parse_config("[optim]\nlr = 0.1\nlearning_rate = 3\n", "c.toml"); }),
            "c.toml:3: unknown key 'optim.learning_rate'");
  EXPECT_EQ(error_of([] { parse_config("[data]\n\nbatch_size = \"big\"\n", "c.toml"); }),
            "c.toml:3: data.batch_size: expected integer");
  EXPECT_EQ(error_of([] { parse_config("[data]\nbatch_size = -1\n", "c.toml"); }),
            "c.toml:2: data.batch_size: expected an integer >= 0, got -1");
  EXPECT_NE(error_of([] { parse_config("[optim\nlr = 1\n", "c.toml"); }).find("c.toml:1:"), std::string::npos);
  EXPECT_EQ(error_of([] { parse_config("[wat]\nx = 1\n", "c.toml"); }), "c.toml:2: unknown key 'wat.x'");
  EXPECT_EQ(error_of([] { load_config("/nonexistent/x.toml"); }), "/nonexistent/x.toml: cannot open the configuration file");
}

TEST(Config, OverridesTakeTomlValuesOrBareStrings) {
  TrainConfig c;
  apply_override(c, "optim.lr=0.05");
  apply_override(c, "model.arch=resnet20");
  apply_override(c, "schedule.milestones=[3, 6]");
  apply_override(c, "data.flip=true");
  apply_override(c, "precision.mac=in=e4m3 acc=fp16");  // the first '=' splits key and value
  apply_override(c, "run.name=123");                    // a string key takes digits as text
  EXPECT_EQ(c.lr, 0.05);
  EXPECT_EQ(c.model.arch, "resnet20");
  EXPECT_EQ(c.milestones, (std::vector<std::size_t>{3, 6}));
  EXPECT_TRUE(c.flip);
  EXPECT_EQ(c.mac, "in=e4m3 acc=fp16");
  EXPECT_EQ(c.name, "123");
  EXPECT_EQ(error_of([&] { apply_override(c, "optim.lrr=1"); }), "command line: unknown key 'optim.lrr'");
  EXPECT_EQ(error_of([&] { apply_override(c, "noequals"); }), "command line: 'noequals' is not key=value");
  EXPECT_EQ(error_of([&] { apply_override(c, "data.flip=maybe"); }), "command line: data.flip: expected bool");
}

TEST(Config, ValidateNamesTheKey) {
  const auto bad = [](const std::string& o) {
    TrainConfig c;
    apply_override(c, o);
    return error_of([&] { validate(c); });
  };
  EXPECT_EQ(bad("data.dataset=imagenet").rfind("data.dataset: unknown data set 'imagenet'", 0), 0u);
  EXPECT_EQ(bad("model.arch=resnet19").rfind("model.arch: unknown model", 0), 0u);
  EXPECT_EQ(bad("precision.mac=acc=e9").rfind("precision.mac: ", 0), 0u);
  EXPECT_EQ(bad("optim.momentum=1.5"), "optim.momentum: must be in [0, 1)");
  EXPECT_EQ(bad("schedule.milestones=[5, 3]"), "schedule.milestones: must increase");
  EXPECT_EQ(bad("train.epochs=0"), "train.epochs: must be at least 1");
  EXPECT_EQ(bad("optim.name=rmsprop").rfind("optim.name: unknown optimizer", 0), 0u);
}

TEST(Config, ResolvedTomlRoundTrips) {
  TrainConfig c;
  apply_override(c, "optim.lr=0.123456789");
  apply_override(c, "model.hidden=[7, 5]");
  apply_override(c, "run.name=with \"quotes\" and \\ backslash");
  apply_override(c, "precision.grad=in=e5m2 acc=fp32 order=chunk64");
  const std::string text = to_toml(c);
  const TrainConfig back = parse_config(text, "resolved");
  EXPECT_TRUE(back == c) << text;
  EXPECT_EQ(back.lr, 0.123456789);
  // Every declared key appears in the resolved file exactly once.
  for (const ConfigKey& k : config_keys()) {
    const std::string leaf = k.key.substr(k.key.find('.') + 1);
    EXPECT_NE(text.find("\n" + leaf + " = "), std::string::npos) << k.key;
  }
  EXPECT_TRUE(parse_config(to_toml(TrainConfig{}), "d") == TrainConfig{});
}

}  // namespace
}  // namespace mpsim
