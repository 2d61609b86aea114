// Checkpoint directories (src/train/checkpoint.cpp): a save names the new checkpoint in `latest`,
// round-trips through load, and leaves exactly one checkpoint behind — including after a process
// was killed between updating `latest` and removing what it superseded, which leaves complete
// older checkpoints and temporaries that the next save must clear. Names that are not
// checkpoints are never touched.
#include "mpsim/checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

namespace mpsim {
namespace {

namespace fs = std::filesystem;

class CheckpointDir : public ::testing::Test {
 protected:
  void SetUp() override {
    run_ = fs::temp_directory_path() / ("mpsim_checkpoint_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(run_);
    fs::create_directories(run_);
  }
  void TearDown() override { fs::remove_all(run_); }

  static Checkpoint make(std::uint64_t epoch, std::uint64_t step, float w) {
    Checkpoint c;
    c.epoch = epoch;
    c.step = step;
    c.model.tensors["fc.weight"] = Tensor({2}, std::vector<float>{w, -w});
    c.state.tensors["momentum/fc.weight"] = Tensor({2}, std::vector<float>{0.5f * w, 0.25f});
    return c;
  }
  std::set<std::string> entries() const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(run_ / "checkpoints")) names.insert(e.path().filename().string());
    return names;
  }

  fs::path run_;
};

TEST_F(CheckpointDir, SaveLoadRoundTripsAndKeepsOnlyTheNewest) {
  save_checkpoint(run_.string(), make(1, 10, 1.0f));
  const std::string second = save_checkpoint(run_.string(), make(2, 20, 2.0f));
  EXPECT_EQ(entries(), (std::set<std::string>{"epoch-0002-step-00000020", "latest"}));
  EXPECT_EQ(latest_checkpoint(run_.string()), second);
  const Checkpoint back = load_checkpoint(run_.string());
  EXPECT_EQ(back.epoch, 2u);
  EXPECT_EQ(back.step, 20u);
  EXPECT_EQ(back.model.tensors.at("fc.weight").values(), (std::vector<float>{2.0f, -2.0f}));
  EXPECT_EQ(back.state.tensors.at("momentum/fc.weight").values(), (std::vector<float>{1.0f, 0.25f}));
}

TEST_F(CheckpointDir, SaveRemovesWhatKilledProcessesLeftAndNothingElse) {
  save_checkpoint(run_.string(), make(1, 10, 1.0f));
  save_checkpoint(run_.string(), make(2, 20, 2.0f));
  const fs::path root = run_ / "checkpoints";
  // What SIGKILLs at different instants leave: superseded complete checkpoints (killed after
  // `latest` moved on), a half-written checkpoint directory and a temporary of `latest`.
  fs::copy(root / "epoch-0002-step-00000020", root / "epoch-0001-step-00000010");
  fs::copy(root / "epoch-0002-step-00000020", root / "epoch-0000-step-00000005");
  fs::create_directory(root / "epoch-0003-step-00000030.tmp-4242");
  std::ofstream(root / ".latest.tmp-AbC123") << "epoch-0003";
  // A user's own files and directories that only look similar stay.
  std::ofstream(root / "notes.txt") << "keep me";
  fs::create_directory(root / "epoch-best");
  fs::create_directory(root / "epoch-0001-step-00000010-copy");

  const std::string third = save_checkpoint(run_.string(), make(3, 30, 3.0f));
  EXPECT_EQ(entries(), (std::set<std::string>{"epoch-0003-step-00000030", "latest", "notes.txt", "epoch-best",
                                              "epoch-0001-step-00000010-copy"}));
  EXPECT_EQ(latest_checkpoint(run_.string()), third);
  EXPECT_EQ(load_checkpoint(run_.string()).epoch, 3u);
}

TEST_F(CheckpointDir, TheLatestIsNotReplacedInPlace) {
  // Replacing the newest checkpoint under its own name would leave a moment with no complete
  // checkpoint; a run never does it (it checkpoints after steps), so it is refused and the
  // existing checkpoint stays as it was.
  save_checkpoint(run_.string(), make(1, 10, 1.0f));
  EXPECT_THROW(save_checkpoint(run_.string(), make(1, 10, 7.0f)), CheckpointError);
  EXPECT_EQ(entries(), (std::set<std::string>{"epoch-0001-step-00000010", "latest"}));
  EXPECT_EQ(load_checkpoint(run_.string()).model.tensors.at("fc.weight").values(), (std::vector<float>{1.0f, -1.0f}));
}

TEST_F(CheckpointDir, AStaleDirectoryOfTheNewNameIsReplaced) {
  // A run resumed from an older checkpoint reaches a position whose directory a killed process
  // left behind (not the latest): the new checkpoint replaces it.
  save_checkpoint(run_.string(), make(1, 10, 1.0f));
  fs::create_directory(run_ / "checkpoints" / "epoch-0002-step-00000020");
  std::ofstream(run_ / "checkpoints" / "epoch-0002-step-00000020" / "junk") << "x";
  save_checkpoint(run_.string(), make(2, 20, 2.0f));
  EXPECT_EQ(entries(), (std::set<std::string>{"epoch-0002-step-00000020", "latest"}));
  EXPECT_FALSE(fs::exists(run_ / "checkpoints" / "epoch-0002-step-00000020" / "junk"));
  EXPECT_EQ(load_checkpoint(run_.string()).epoch, 2u);
}

TEST_F(CheckpointDir, LoadNamesWhatIsMissing) {
  try {
    load_checkpoint((run_ / "nothing").string());
    FAIL() << "expected CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("no such checkpoint"), std::string::npos) << e.what();
  }
  try {
    load_checkpoint(run_.string());
    FAIL() << "expected CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoints/latest"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mpsim
