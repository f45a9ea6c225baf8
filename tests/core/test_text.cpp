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

// Untrusted bytes quoted in an error: printable UTF-8 (Chinese included) kept, controls, bidi overrides
// and invalid bytes escaped, long input cut at a character boundary with the rest counted.
TEST(Text, PrintableEscapesWhatATerminalWouldInterpret) {
  EXPECT_EQ(printable("plain C:\\path"), "plain C:\\path");
  EXPECT_EQ(printable("甄嬛传 🍵"), "甄嬛传 🍵");
  EXPECT_EQ(printable("a\nb\tc\rd"), "a\\nb\\tc\\rd");
  EXPECT_EQ(printable("\x1b[31mred\x07\x7f"), "\\x1B[31mred\\x07\\x7F");
  EXPECT_EQ(printable("\xc2\x9b"), "\\u{009B}");  // C1 CSI
  EXPECT_EQ(printable("x\xe2\x80\xae"
                      "y"),
            "x\\u{202E}y");                                 // right-to-left override
  EXPECT_EQ(printable("\xe2\x80\xa8"), "\\u{2028}");        // line separator
  EXPECT_EQ(printable("\xff\xfe"), "\\xFF\\xFE");           // not UTF-8
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xED\\xA0\\x80");  // a surrogate
  EXPECT_EQ(printable("\xc0\xaf"), "\\xC0\\xAF");           // overlong '/'
  EXPECT_EQ(printable(std::string(1, '\0')), "\\x00");
  const std::string many(1000, 'a');
  EXPECT_EQ(printable(many), std::string(kMaxExcerptBytes, 'a') + "... (880 more bytes)");
  EXPECT_EQ(printable("甄嬛", 4), "甄... (3 more bytes)");  // never half a character
  EXPECT_EQ(printable("abc", 3), "abc");
}

TEST(Text, Utf8SequenceLength) {
  EXPECT_EQ(utf8_sequence_length("a", 0), 1u);
  EXPECT_EQ(utf8_sequence_length("\xc3\xa9", 0), 2u);
  EXPECT_EQ(utf8_sequence_length("甄", 0), 3u);
  EXPECT_EQ(utf8_sequence_length("🍵", 0), 4u);
  EXPECT_EQ(utf8_sequence_length("\xe7\x94", 0), 0u);          // cut short
  EXPECT_EQ(utf8_sequence_length("\xf5\x80\x80\x80", 0), 0u);  // above U+10FFFF
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
