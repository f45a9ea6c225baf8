// config.json and safetensors (torch-free): the golden files transformers wrote, hand-made legacy
// configs, and malformed safetensors files, each of which must be a clear zlora::Error.
#include <nlohmann/json.hpp>

#include <cstring>

#include "test_util.h"
#include "zlora/core/error.h"
#include "zlora/model/config.h"
#include "zlora/model/safetensors.h"

namespace zm = zlora::model;
using zlora::test::expect_error;
using zlora::test::TempDir;

namespace {

std::filesystem::path golden(const std::string& rel) { return zlora::test::source_dir() / "tests/golden/model" / rel; }

// Expects `fn` to throw zlora::Error whose message contains every piece of `parts`.
// A safetensors file from a raw header string and `data_bytes` bytes of data.
std::string raw_file(const std::string& header, size_t data_bytes, uint64_t claimed_len = UINT64_MAX) {
  const uint64_t n = claimed_len == UINT64_MAX ? header.size() : claimed_len;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\x01');
}

zm::SafetensorsHeader parse(const std::string& bytes) {
  return zm::parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test.safetensors");
}

}  // namespace

// ---- config.json -------------------------------------------------------------------------------

TEST(ModelConfig, Qwen2AsTransformers5WritesIt) {
  auto c = zm::load_model_config(golden("qwen2"));
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_EQ(c.architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(c.vocab_size, 96);
  EXPECT_EQ(c.hidden_size, 48);
  EXPECT_EQ(c.intermediate_size, 80);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 12);                  // derived: hidden / heads
  EXPECT_DOUBLE_EQ(c.rope_theta, 1000000.0);  // from rope_parameters
  EXPECT_EQ(c.rope_scaling.type, "default");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.torch_dtype, "float32");
  EXPECT_EQ(c.bos_token_id.value(), 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
}

TEST(ModelConfig, LlamaWithLlama3RopeAndExplicitHeadDim) {
  auto c = zm::load_model_config(golden("llama/config.json"));
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.head_dim, 16);  // given, not hidden / heads (12)
  EXPECT_EQ(c.q_dim(), 64);
  EXPECT_EQ(c.kv_dim(), 32);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 64);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
}

TEST(ModelConfig, LegacyRopeScalingWithTypeOrRopeType) {
  // transformers 4.x layout (Llama 3.1's published config.json), with either key naming the type.
  for (const char* key : {"rope_type", "type"}) {
    std::string j = std::string(R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":128256,
      "hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,
      "num_key_value_heads":8,"rms_norm_eps":1e-5,"rope_theta":500000.0,"torch_dtype":"bfloat16",
      "bos_token_id":128000,"eos_token_id":[128001,128008,128009],"attention_bias":false,
      "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
      "original_max_position_embeddings":8192,")") +
                    key + R"(":"llama3"}})";
    auto c = zm::parse_model_config(j);
    EXPECT_EQ(c.rope_scaling.type, "llama3");
    EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.torch_dtype, "bfloat16");
    EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  }
}

TEST(ModelConfig, MistralAndLlamaBiases) {
  auto m = zm::parse_model_config(R"({"model_type":"mistral","architectures":["MistralForCausalLM"],"vocab_size":32000,
    "hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,
    "num_key_value_heads":8,"sliding_window":4096,"rope_theta":10000.0})");
  EXPECT_EQ(m.sliding_window.value(), 4096);
  EXPECT_FALSE(m.qkv_bias);
  auto l = zm::parse_model_config(R"({"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
    "num_hidden_layers":1,"num_attention_heads":2,"attention_bias":true,"mlp_bias":true})");
  EXPECT_TRUE(l.qkv_bias);
  EXPECT_TRUE(l.o_bias);
  EXPECT_TRUE(l.mlp_bias);
  EXPECT_EQ(l.num_key_value_heads, 2);  // defaults to num_attention_heads
}

TEST(ModelConfig, RefusesWhatItDoesNotImplement) {
  const std::string dims =
      R"("vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2)";
  expect_error([&] { zm::parse_model_config(R"({"model_type":"gpt2",)" + dims + "}"); },
               {"model_type 'gpt2' is not supported", "qwen2, llama, mistral"});
  expect_error(
      [&] {
        zm::parse_model_config(R"({"model_type":"qwen2","architectures":["Qwen2ForSequenceClassification"],)" + dims +
                               "}");
      },
      {"Qwen2ForSequenceClassification", "Qwen2ForCausalLM"});
  expect_error(
      [&] {
        zm::parse_model_config(R"({"model_type":"llama","rope_scaling":{"type":"yarn","factor":4},)" + dims + "}");
      },
      {"rope scaling type 'yarn'", "llama3"});
  expect_error([&] { zm::parse_model_config(R"({"model_type":"llama","hidden_act":"gelu",)" + dims + "}"); },
               {"hidden_act 'gelu'"});
  expect_error([&] { zm::parse_model_config(R"({"model_type":"qwen2","use_sliding_window":true,)" + dims + "}"); },
               {"use_sliding_window"});
  expect_error([] { zm::parse_model_config(R"({"model_type":"llama","vocab_size":10})"); },
               {"'hidden_size' is missing"});
  expect_error(
      [] {
        zm::parse_model_config(R"({"model_type":"llama","vocab_size":10,"hidden_size":8000000000,)"
                               R"("intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2})");
      },
      {"hidden_size", "outside the supported range"});
  expect_error(
      [] {
        zm::parse_model_config(R"({"model_type":"llama","vocab_size":10,"hidden_size":9,)"
                               R"("intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2})");
      },
      {"not divisible"});
  expect_error(
      [] {
        zm::parse_model_config(
            R"({"model_type":"llama","vocab_size":10,"hidden_size":8,)"
            R"("intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":3})");
      },
      {"multiple of num_key_value_heads"});
  expect_error([] { zm::parse_model_config("{not json"); }, {"not valid JSON"});
  TempDir dir;
  expect_error([&] { zm::load_model_config(dir.path()); }, {"config.json", "not found"});
}

// ---- safetensors -------------------------------------------------------------------------------

TEST(Safetensors, ReadsTheGoldenModelFile) {
  zm::SafetensorsModel m(golden("qwen2"));
  const auto& q = m.info("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(q.dtype, zm::DType::kF32);
  EXPECT_EQ(q.shape, (std::vector<int64_t>{48, 48}));
  EXPECT_TRUE(m.contains("model.layers.1.self_attn.k_proj.bias"));
  EXPECT_TRUE(m.contains("lm_head.weight"));
  zm::SafetensorsModel l(golden("llama"));
  EXPECT_FALSE(l.contains("lm_head.weight"));  // tied: transformers does not save it
}

TEST(Safetensors, WriterRoundTripsAndPadsTheHeader) {
  TempDir dir;
  std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, 7.0f, 8.0f};
  std::vector<uint16_t> b = {0x3F80, 0xC000};  // bf16 1.0, -2.0
  std::vector<int64_t> c = {-100, 5};
  zm::write_safetensors(dir / "x.safetensors",
                        {{"a", zm::DType::kF32, {2, 3}, a.data(), 24},
                         {"b", zm::DType::kBF16, {2}, b.data(), 4},
                         {"c", zm::DType::kI64, {2}, c.data(), 16}},
                        {{"format", "pt"}});
  const std::string bytes = zlora::test::read_file(dir / "x.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);  // data section 8-byte aligned, as the Python writer pads with spaces
  EXPECT_EQ(bytes[8 + n - 1] == ' ' || bytes[8 + n - 1] == '}', true);
  zm::SafetensorsFile f(dir / "x.safetensors");
  EXPECT_EQ(f.header().metadata.at("format"), "pt");
  const auto* ta = f.find("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(f.data(*ta), a.data(), 24), 0);
  EXPECT_EQ(std::memcmp(f.data(*f.find("b")), b.data(), 4), 0);
  EXPECT_EQ(std::memcmp(f.data(*f.find("c")), c.data(), 16), 0);
  EXPECT_EQ(f.find("c")->dtype, zm::DType::kI64);
  expect_error([&] { zm::serialize_safetensors({{"a", zm::DType::kF32, {2, 3}, a.data(), 20}}); }, {"needs 24"});
  expect_error(
      [&] {
        zm::serialize_safetensors({{"a", zm::DType::kF32, {1}, a.data(), 4}, {"a", zm::DType::kF32, {1}, a.data(), 4}});
      },
      {"duplicate"});
}

TEST(Safetensors, MalformedFilesAreClearErrors) {
  const std::string ok_header = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  EXPECT_EQ(parse(raw_file(ok_header, 16)).tensors.size(), 1u);
  // Truncated: the data section is shorter than the offsets claim.
  expect_error([&] { parse(raw_file(ok_header, 10)); }, {"'w'", "run past", "truncated"});
  // Too short for even the length prefix.
  expect_error([&] { parse(std::string(5, '\0')); }, {"too small"});
  // Header length past the end of the file.
  expect_error([&] { parse(raw_file(ok_header, 16, 4096)); }, {"header length 4096 runs past the end"});
  // A header length beyond the limit (no attempt to allocate it).
  expect_error([&] { parse(raw_file(ok_header, 16, uint64_t(1) << 40)); }, {"exceeds the"});
  // Overlapping data.
  expect_error(
      [&] {
        parse(raw_file(
            R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
            16));
      },
      {"overlap", "'a'", "'b'"});
  // dtype × shape disagrees with the byte span.
  expect_error([&] { parse(raw_file(R"({"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,16]}})", 16)); },
               {"BF16", "is 8 bytes but data_offsets span 16"});
  // Shape whose product overflows.
  expect_error(
      [&] { parse(raw_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}})", 16)); },
      {"overflows"});
  // Bad JSON, non-object, unknown dtype, negative or reversed offsets, stray fields, bad metadata.
  expect_error([&] { parse(raw_file(R"({"w":{"dtype":"F32",)", 16)); }, {"not valid JSON"});
  expect_error([&] { parse(raw_file(R"([1,2,3])", 0)); }, {"not a JSON object"});
  expect_error([&] { parse(raw_file(R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1)); },
               {"dtype 'F8_E4M3' is not supported", "BF16"});
  expect_error([&] { parse(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4)); },
               {"non-negative"});
  expect_error([&] { parse(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4)); },
               {"end before"});
  expect_error([&] { parse(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4)); },
               {"unexpected field 'x'"});
  expect_error([&] { parse(raw_file(R"({"__metadata__":{"a":1}})", 0)); }, {"__metadata__"});
  // The same through the file API (mmap path).
  TempDir dir;
  zlora::test::write_file(dir / "t.safetensors", raw_file(ok_header, 7));
  expect_error([&] { zm::SafetensorsFile f(dir / "t.safetensors"); }, {"t.safetensors", "truncated"});
  zlora::test::write_file(dir / "empty.safetensors", "");
  expect_error([&] { zm::SafetensorsFile f(dir / "empty.safetensors"); }, {"too small"});
  expect_error([&] { zm::SafetensorsFile f(dir / "missing.safetensors"); }, {"cannot open"});
}

TEST(Safetensors, ShardedModelsThroughTheIndex) {
  TempDir dir;
  std::vector<float> a = {1, 2, 3, 4}, b = {5, 6};
  zm::write_safetensors(dir / "model-00001-of-00002.safetensors", {{"a", zm::DType::kF32, {2, 2}, a.data(), 16}});
  zm::write_safetensors(dir / "model-00002-of-00002.safetensors", {{"b", zm::DType::kF32, {2}, b.data(), 8}});
  zlora::test::write_file(dir / "model.safetensors.index.json",
                          R"({"metadata":{"total_size":24},"weight_map":{"a":"model-00001-of-00002.safetensors",)"
                          R"("b":"model-00002-of-00002.safetensors"}})");
  zm::SafetensorsModel m(dir.path());
  EXPECT_EQ(m.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(std::memcmp(m.data("b"), b.data(), 8), 0);
  EXPECT_NE(m.file_of("b").find("00002"), std::string::npos);
  expect_error([&] { m.info("c"); }, {"no tensor named 'c'"});

  zlora::test::write_file(
      dir / "model.safetensors.index.json",
      R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors"}})");
  expect_error([&] { zm::SafetensorsModel x(dir.path()); }, {"does not hold it"});
  zlora::test::write_file(dir / "model.safetensors.index.json", R"({"weight_map":{"a":"../secret.safetensors"}})");
  expect_error([&] { zm::SafetensorsModel x(dir.path()); }, {"inside the model directory"});
  zlora::test::write_file(dir / "model.safetensors.index.json",
                          R"({"weight_map":{"a":"model-00009-of-00009.safetensors"}})");
  expect_error([&] { zm::SafetensorsModel x(dir.path()); }, {"missing"});
}

TEST(Safetensors, PickleOnlyDirectoriesAreRefusedWithTheConversion) {
  TempDir dir;
  zlora::test::write_file(dir / "pytorch_model.bin", "PK");
  zlora::test::write_file(dir / "config.json", "{}");
  expect_error([&] { zm::SafetensorsModel m(dir.path()); },
               {"pytorch_model.bin", "safetensors only", "save_pretrained"});
  TempDir empty;
  expect_error([&] { zm::SafetensorsModel m(empty.path()); }, {"no model.safetensors"});
  expect_error([&] { zm::SafetensorsModel m(dir / "pytorch_model.bin"); }, {"safetensors format only"});
}

// ---- model files against config.json ----------------------------------------------------------

// An integer or BOOL tensor where a float weight is expected is refused naming the file, the tensor, its
// dtype and the float dtypes accepted (it used to be converted to float without a word).
TEST(ModelFiles, IntegerWeightsAreRefusedNamingFileTensorAndDtype) {
  TempDir dir;
  // Hand-written: one F32, one BF16 weight and each integer dtype the format has.
  std::string header = R"({"f":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("h":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]},)"
                       R"("model.layers.0.mlp.up_proj.weight":{"dtype":"I32","shape":[2],"data_offsets":[12,20]},)"
                       R"("i8":{"dtype":"I8","shape":[4],"data_offsets":[20,24]},)"
                       R"("i16":{"dtype":"I16","shape":[2],"data_offsets":[24,28]},)"
                       R"("i64":{"dtype":"I64","shape":[1],"data_offsets":[28,36]},)"
                       R"("u8":{"dtype":"U8","shape":[4],"data_offsets":[36,40]},)"
                       R"("b":{"dtype":"BOOL","shape":[4],"data_offsets":[40,44]}})";
  zlora::test::write_file(dir / "model.safetensors", raw_file(header, 44));
  zm::SafetensorsModel m(dir.path());
  EXPECT_NO_THROW(zm::require_float_weight(m, "f"));
  EXPECT_NO_THROW(zm::require_float_weight(m, "h"));
  expect_error([&] { zm::require_float_weight(m, "model.layers.0.mlp.up_proj.weight"); },
               {(dir / "model.safetensors").string(), "tensor 'model.layers.0.mlp.up_proj.weight'", "dtype I32",
                "floating-point (F16, BF16, F32 or F64)"});
  for (const char* name : {"i8", "i16", "i64", "u8", "b"}) {
    const std::string dtype = zm::dtype_name(m.info(name).dtype);
    expect_error([&] { zm::require_float_weight(m, name); },
                 {"tensor '" + std::string(name) + "'", "dtype " + dtype, "F16, BF16, F32 or F64"});
  }
  EXPECT_TRUE(zm::is_float_dtype(zm::DType::kF64));
  EXPECT_FALSE(zm::is_float_dtype(zm::DType::kU16));
}

// Tensors of layers config.json does not declare are refused naming the first few, their count, the
// layers and config.json's num_hidden_layers (they used to be dropped without a word).
TEST(ModelFiles, TensorsOfUndeclaredLayersAreRefused) {
  TempDir dir;
  std::vector<float> one = {1.0f};
  std::vector<zm::TensorBytes> tensors;
  std::vector<std::string> names;
  for (int layer = 0; layer < 6; ++layer)
    for (const char* local : {"input_layernorm.weight", "mlp.down_proj.weight", "self_attn.q_proj.weight"})
      names.push_back("model.layers." + std::to_string(layer) + "." + local);
  names.push_back("model.layers.extra.weight");  // not a layer index: not a layer's tensor
  names.push_back("model.norm.weight");
  for (const auto& n : names) tensors.push_back({n, zm::DType::kF32, {1}, one.data(), 4});
  zm::write_safetensors(dir / "model.safetensors", tensors);
  zm::SafetensorsModel m(dir.path());
  EXPECT_NO_THROW(zm::require_declared_layers(m, 6, "config.json"));
  EXPECT_NO_THROW(zm::require_declared_layers(m, 8, "config.json"));  // fewer layers in the files: "missing"
  expect_error([&] { zm::require_declared_layers(m, 4, (dir / "config.json").string()); },
               {dir.path().string(), "6 tensor(s) belong to decoder layers 4 to 5",
                (dir / "config.json").string() + " does not declare (num_hidden_layers 4: layers 0 to 3)",
                "model.layers.4.input_layernorm.weight, model.layers.4.mlp.down_proj.weight, "
                "model.layers.4.self_attn.q_proj.weight, model.layers.5.input_layernorm.weight and 2 more"});
  // Layer 10 sorts after layer 9 by number, not by name; one layer is named as one.
  tensors.push_back({"model.layers.10.mlp.up_proj.weight", zm::DType::kF32, {1}, one.data(), 4});
  zm::write_safetensors(dir / "model.safetensors", tensors);
  zm::SafetensorsModel m10(dir.path());
  expect_error([&] { zm::require_declared_layers(m10, 6, "c.json"); },
               {"1 tensor(s) belong to decoder layer 10, which c.json does not declare (num_hidden_layers 6: layers "
                "0 to 5): model.layers.10.mlp.up_proj.weight."});
}

// Names and values a hostile header holds are quoted escaped: no terminal escape reaches the terminal.
TEST(Safetensors, ErrorsQuoteHeaderContentsPrintably) {
  const std::string msg = [&] {
    try {
      parse(raw_file("{\"w\\u001b]0;pwned\\u0007\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8));
    } catch (const zlora::Error& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  }();
  EXPECT_NE(msg.find("tensor 'w\\x1B]0;pwned\\x07'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\x1b'), std::string::npos) << msg;
  expect_error([&] { parse(raw_file(R"({"w":{"dtype":"F8\u202e","shape":[1],"data_offsets":[0,1]}})", 1)); },
               {"dtype 'F8\\u{202E}' is not supported"});
}

// config.json's strings are quoted escaped too.
TEST(ModelConfig, ErrorsQuoteFileContentsPrintably) {
  expect_error([] { zm::parse_model_config(R"({"model_type": "qwen\u001b[2J"})", "c.json"); },
               {"model_type 'qwen\\x1B[2J' is not supported"});
  expect_error(
      [] {
        zm::parse_model_config(R"({"model_type": "llama", "architectures": ["Evil\u0007"], "vocab_size": 1})",
                               "c.json");
      },
      {"architecture \"Evil\\u0007\""});
}
