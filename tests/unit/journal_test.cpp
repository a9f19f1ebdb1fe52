#include "control/journal.hpp"

#include <stdlib.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "control/state_file.hpp"
#include "unit_expect.hpp"

namespace vp::control {
namespace {

namespace fs = std::filesystem;
using unit::fails_with;
using unit::succeeded;

class JournalTest : public ::testing::Test {
 protected:
  JournalTest() {
    std::string tmpl = (fs::temp_directory_path() / "vp-journal-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    dir_ = tmpl;
    path_ = (dir_ / "state.json").string();
  }
  ~JournalTest() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static std::string read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  static void append_raw(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    out << text;
  }

  static SavedEndpoint endpoint(const char* name, int last_octet, uint32_t mtu = 1500) {
    SavedEndpoint e;
    e.config.name = name;
    e.config.mac = net::Mac{{0x02, 0, 0, 0, 0, static_cast<uint8_t>(last_octet)}};
    e.config.bind = std::string("/run/vpd/") + name + ".sock";
    e.config.mtu = mtu;
    return e;
  }

  State load() {
    auto s = load_state(path_);
    EXPECT_TRUE(succeeded(s));
    return s ? *s : State{};
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(JournalTest, appended_records_apply_over_the_snapshot_in_order) {
  ASSERT_TRUE(succeeded(save_state(path_, State{{endpoint("vp0", 1)}})));
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp1", 2)))));
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp0", 1, 9000)))));
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp2", 3)))));
  ASSERT_TRUE(succeeded(append_journal(path_, encode_remove("vp1"))));
  EXPECT_EQ(load(), (State{{endpoint("vp0", 1, 9000), endpoint("vp2", 3)}}));
}

TEST_F(JournalTest, journal_without_a_snapshot_is_the_whole_state) {
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp0", 1)))));
  EXPECT_FALSE(fs::exists(path_));
  EXPECT_EQ(load(), State{{endpoint("vp0", 1)}});
}

TEST_F(JournalTest, replaying_over_a_snapshot_that_has_the_changes_changes_nothing) {
  // A crash after compaction's rename, before the journal was emptied.
  const State state{{endpoint("vp0", 1, 9000), endpoint("vp2", 3)}};
  ASSERT_TRUE(succeeded(save_state(path_, state)));
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp1", 2)))));
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp0", 1, 9000)))));
  ASSERT_TRUE(succeeded(append_journal(path_, encode_remove("vp1"))));
  EXPECT_EQ(load(), state);
}

TEST_F(JournalTest, record_cut_short_without_newline_is_ignored) {
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp0", 1)))));
  const std::string next = encode_put(endpoint("vp1", 2));
  append_raw(journal_path(path_), next.substr(0, next.size() / 2));
  EXPECT_EQ(load(), State{{endpoint("vp0", 1)}});
}

TEST_F(JournalTest, append_after_a_torn_record_cuts_it_off) {
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp0", 1)))));
  const std::string torn = encode_put(endpoint("vp1", 2));
  append_raw(journal_path(path_), torn.substr(0, torn.size() - 5));
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp2", 3)))));
  EXPECT_EQ(load(), (State{{endpoint("vp0", 1), endpoint("vp2", 3)}}));
  EXPECT_EQ(read(journal_path(path_)),
            encode_put(endpoint("vp0", 1)) + encode_put(endpoint("vp2", 3)));
}

TEST_F(JournalTest, unreadable_last_line_is_ignored) {
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp0", 1)))));
  append_raw(journal_path(path_), std::string(40, '\0') + "\n");  // what a disk may keep
  EXPECT_EQ(load(), State{{endpoint("vp0", 1)}});
}

TEST_F(JournalTest, bad_record_before_the_last_is_corrupt) {
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp0", 1)))));
  append_raw(journal_path(path_), "{\"put\": \n");
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp1", 2)))));
  EXPECT_TRUE(fails_with(load_state(path_), "state-corrupt", {"state.json.journal", "record 2"}));
}

TEST_F(JournalTest, record_of_an_unknown_kind_is_corrupt) {
  append_raw(journal_path(path_), "{\"rename\": \"vp0\"}\n");
  append_raw(journal_path(path_), encode_remove("vp0"));
  EXPECT_TRUE(fails_with(load_state(path_), "state-corrupt", {"state.json.journal"}));
}

TEST_F(JournalTest, compaction_writes_the_loaded_state_as_snapshot_and_empties_the_journal) {
  ASSERT_TRUE(succeeded(save_state(path_, State{{endpoint("vp0", 1)}})));
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp1", 2)))));
  ASSERT_TRUE(succeeded(append_journal(path_, encode_remove("vp0"))));
  const State before = load();
  ASSERT_TRUE(succeeded(compact_state(path_, before)));
  EXPECT_EQ(read(path_), encode_state(before));
  EXPECT_EQ(read(journal_path(path_)), "");
  EXPECT_EQ(load(), before);
  EXPECT_FALSE(fs::exists(path_ + ".tmp"));
}

TEST_F(JournalTest, refused_append_leaves_the_journal_as_it_was) {
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp0", 1)))));
  const std::string journal = journal_path(path_);
  const std::string before = read(journal);
  fs::rename(journal, journal + ".aside");
  fs::create_directory(journal);  // every open for writing fails, even for root
  EXPECT_TRUE(fails_with(append_journal(path_, encode_put(endpoint("vp1", 2))), "system",
                         {"state.json.journal"}));
  fs::remove(journal);
  fs::rename(journal + ".aside", journal);
  EXPECT_EQ(read(journal), before);
  EXPECT_EQ(load(), State{{endpoint("vp0", 1)}});
}

TEST_F(JournalTest, failed_compaction_keeps_the_journal) {
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp0", 1)))));
  const std::string before = read(journal_path(path_));
  fs::create_directory(path_ + ".tmp");  // the snapshot cannot be written
  EXPECT_FALSE(compact_state(path_, State{}));
  EXPECT_EQ(read(journal_path(path_)), before);
  EXPECT_EQ(load(), State{{endpoint("vp0", 1)}});
}

TEST_F(JournalTest, set_aside_moves_the_journal_with_the_corrupt_snapshot) {
  append_raw(path_, "not json");
  ASSERT_TRUE(succeeded(append_journal(path_, encode_put(endpoint("vp0", 1)))));
  auto aside = set_aside(path_);
  ASSERT_TRUE(succeeded(aside));
  EXPECT_FALSE(fs::exists(journal_path(path_)));
  EXPECT_TRUE(fs::exists(journal_path(*aside)));
  EXPECT_EQ(load(), State{});
}

}  // namespace
}  // namespace vp::control
