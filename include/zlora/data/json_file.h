// JSON reading with errors that point into the file: "path:line:col: what". Every JSON input of the data
// module (tokenizer.json, dataset_info.json, data files) comes through here.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace zlora::data {

// 1-based line and column of byte `offset` in `text` (column counts bytes, as editors show for ASCII).
struct TextPosition {
  size_t line = 1;
  size_t column = 1;
};
TextPosition position_of(std::string_view text, size_t offset);

// Parses one JSON document; a syntax error becomes zlora::Error "origin:line:col: ...".
nlohmann::json parse_json(std::string_view text, const std::string& origin);

// Parses a JSON array file or a JSON Lines file (one object per non-blank line), as HF `datasets`'
// json builder accepts both. Rows are returned in file order.
std::vector<nlohmann::json> parse_json_rows(std::string_view text, const std::string& origin);

}  // namespace zlora::data
