#include "zlora/data/json_file.h"

#include "zlora/core/error.h"
#include "zlora/core/text.h"

namespace zlora::data {

TextPosition position_of(std::string_view text, size_t offset) {
  TextPosition p;
  offset = std::min(offset, text.size());
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++p.line;
      p.column = 1;
    } else {
      ++p.column;
    }
  }
  return p;
}

namespace {

// nlohmann's message carries its own "at line L, column C" relative to the parsed piece; ours is
// relative to the file, so keep only the part after the location. Its "last read: '...'" quotes the
// file's bytes as they are (a garbage file's escape sequences or binary included): escaped here.
std::string short_reason(const nlohmann::json::parse_error& e) {
  std::string what = e.what();
  auto colon = what.find(": ", what.find("parse error"));
  return text::printable(colon == std::string::npos ? what : what.substr(colon + 2), 240);
}

// Deeper nesting than any real file has: nlohmann parses iteratively, but copying, comparing and dumping
// a value recurse once per level, so a hostile "[[[[..." of a few hundred KB would overflow the stack.
constexpr size_t kMaxJsonDepth = 512;

// Refuses a document nested deeper than kMaxJsonDepth before it is parsed (a scan outside strings).
void require_depth(std::string_view text, size_t base, std::string_view doc, const std::string& origin) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < doc.size(); ++i) {
    char c = doc[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        TextPosition p = position_of(text, base + i);
        fail("{}:{}:{}: malformed JSON: nested deeper than {} levels", origin, p.line, p.column, kMaxJsonDepth);
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

[[noreturn]] void fail_at(std::string_view text, size_t base, const nlohmann::json::parse_error& e,
                          const std::string& origin) {
  // e.byte is 1-based: the position of the character that made parsing fail.
  size_t offset = base + (e.byte > 0 ? e.byte - 1 : 0);
  TextPosition p = position_of(text, offset);
  fail("{}:{}:{}: malformed JSON: {}", origin, p.line, p.column, short_reason(e));
}

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& origin) {
  require_depth(text, 0, text, origin);
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    fail_at(text, 0, e, origin);
  } catch (const nlohmann::json::exception& e) {  // e.g. a number beyond double's range
    fail("{}: invalid JSON ({})", origin, text::printable(e.what(), 240));
  }
}

std::vector<nlohmann::json> parse_json_rows(std::string_view text, const std::string& origin) {
  size_t first = text.find_first_not_of(" \t\r\n\xEF\xBB\xBF");
  std::vector<nlohmann::json> rows;
  if (first == std::string_view::npos) return rows;
  if (text[first] == '[') {
    nlohmann::json doc = parse_json(text, origin);
    rows.reserve(doc.size());
    for (auto& row : doc) rows.push_back(std::move(row));
    return rows;
  }
  // JSON Lines: each non-blank line is one document.
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    if (line.find_first_not_of(" \t\r") != std::string_view::npos) {
      require_depth(text, start, line, origin);
      try {
        rows.push_back(nlohmann::json::parse(line.begin(), line.end()));
      } catch (const nlohmann::json::parse_error& e) {
        fail_at(text, start, e, origin);
      } catch (const nlohmann::json::exception& e) {
        fail("{}: invalid JSON on the line starting at byte {} ({})", origin, start, text::printable(e.what(), 240));
      }
    }
    start = end + 1;
  }
  return rows;
}

}  // namespace zlora::data
