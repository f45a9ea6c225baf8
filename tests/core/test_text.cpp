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
