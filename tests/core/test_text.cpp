#include "zlora/core/text.h"

#include <gtest/gtest.h>

using namespace zlora::text;

TEST(Text, SplitTrimJoin) {
  EXPECT_EQ(split(" a, b ,,c ", ','), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(join({"x", "y"}, "-"), "x-y");
  EXPECT_EQ(trim("  q \n"), "q");
}

TEST(Text, Numbers) {
  long long i;
  double d;
  EXPECT_TRUE(parse_int64("42", i) && i == 42);
  EXPECT_TRUE(parse_int64("1e9", i) && i == 1000000000);
  EXPECT_FALSE(parse_int64("1.5", i));
  EXPECT_FALSE(parse_int64("12abc", i));
  EXPECT_TRUE(parse_double("5e-05", d) && d == 5e-05);
  EXPECT_FALSE(parse_double("nan", d));
  bool b;
  EXPECT_TRUE(parse_bool("True", b) && b);
  EXPECT_TRUE(parse_bool("no", b) && !b);
  EXPECT_FALSE(parse_bool("maybe", b));
}

TEST(Text, Suggestions) {
  EXPECT_EQ(nearest("learning_rat", {"learning_rate", "lora_rank"}), "learning_rate");
  EXPECT_EQ(nearest("zzzzzz", {"learning_rate", "lora_rank"}), "");
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
}

#include "test_util.h"
#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/sha256.h"

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(zlora::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(zlora::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::string million(1000000, 'a');
  EXPECT_EQ(zlora::sha256_hex(million), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Fs, AtomicWriteReplacesAndLeavesNoTemp) {
  zlora::test::TempDir dir;
  auto p = dir / "f.json";
  zlora::fs::write_file_atomic(p, "one");
  zlora::fs::write_file_atomic(p, "two");
  EXPECT_EQ(zlora::fs::read_file(p), "two");
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) (void)e, ++n;
  EXPECT_EQ(n, 1);
  EXPECT_THROW(zlora::fs::write_file_atomic(dir / "missing" / "f", "x"), zlora::Error);
  EXPECT_THROW(zlora::fs::read_file(dir / "nope"), zlora::Error);
}
