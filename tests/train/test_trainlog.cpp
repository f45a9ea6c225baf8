// Metrics, log files and the loss plot against their references: hand-derived FLOPs, Python's timedelta
// text, LLaMA-Factory's field names and EMA, HF's file shapes, PNG's file format.
#include "test_util.h"
#include "zlora/core/error.h"
#include "zlora/train/metrics.h"
#include "zlora/train/plot.h"
#include "zlora/train/trainer_log.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <set>

using namespace zlora::train;
using nlohmann::json;
using zlora::test::read_file;
using zlora::test::TempDir;
using zlora::test::write_file;

TEST(Metrics, SampleFlopsConvention) {
  FlopsModel m{1000, 10, 2, 8};
  // 4 tokens: 4 * (4 * 1000 + 6 * 10) linear + 6 * layers 2 * width 8 * 4^2 attention.
  EXPECT_DOUBLE_EQ(m.sample_flops(4), 4.0 * 4060 + 6.0 * 2 * 8 * 16);
  // Qwen2.5-7B-like: the LoRA term is small, the frozen 4N dominates.
  FlopsModel q{7'070'000'000LL, 20'185'088LL, 28, 3584};
  double per_token = q.sample_flops(1024) / 1024;
  EXPECT_NEAR(per_token, 4.0 * 7.07e9 + 6.0 * 20185088 + 6.0 * 28 * 3584 * 1024, 1.0);
}

TEST(Metrics, PeakTableByDeviceName) {
  EXPECT_DOUBLE_EQ(*peak_flops("NVIDIA H100 80GB HBM3", true), 989e12);
  EXPECT_DOUBLE_EQ(*peak_flops("NVIDIA H200", true), 989e12);
  EXPECT_DOUBLE_EQ(*peak_flops("NVIDIA H100 PCIe", true), 756e12);
  EXPECT_DOUBLE_EQ(*peak_flops("NVIDIA A100-SXM4-80GB", true), 312e12);
  EXPECT_DOUBLE_EQ(*peak_flops("NVIDIA A10G", true), 70e12);                // not the A10's 125
  EXPECT_DOUBLE_EQ(*peak_flops("NVIDIA H100 80GB HBM3", false), 494.5e12);  // TF32
  EXPECT_FALSE(peak_flops("cpu", true).has_value());
  EXPECT_FALSE(peak_flops("NVIDIA GeForce GTX 1080", true).has_value());
}

TEST(Metrics, DurationsAsPythonTimedelta) {
  EXPECT_EQ(format_duration(0), "0:00:00");
  EXPECT_EQ(format_duration(65.9), "0:01:05");  // int() truncates
  EXPECT_EQ(format_duration(3725), "1:02:05");
  EXPECT_EQ(format_duration(90061), "1 day, 1:01:01");
  EXPECT_EQ(format_duration(172800), "2 days, 0:00:00");
}

TEST(Metrics, TrackerWindowsThroughputMfuEta) {
  MetricsTracker t(10, 5, 2, 100.0, 0.0);
  t.add_step({2.0, 1e-4, 0.5, 100, 4, 1000}, 1.0);
  t.add_step({4.0, 2e-4, 0.7, 300, 4, 3000}, 2.0);
  LogRecord r = t.take_record(2.0);
  EXPECT_EQ(r.current_steps, 2);
  EXPECT_EQ(r.total_steps, 10);
  EXPECT_DOUBLE_EQ(r.loss, 3.0);  // mean of the window's step losses
  EXPECT_DOUBLE_EQ(r.lr, 2e-4);
  EXPECT_DOUBLE_EQ(r.grad_norm, 0.7);
  EXPECT_DOUBLE_EQ(r.epoch, 0.4);
  EXPECT_DOUBLE_EQ(r.percentage, 20.0);
  EXPECT_DOUBLE_EQ(r.elapsed_s, 2.0);
  EXPECT_DOUBLE_EQ(r.remaining_s, 8.0);  // 2 s / 2 steps * 8 left
  EXPECT_DOUBLE_EQ(r.throughput, 200.0);
  EXPECT_DOUBLE_EQ(r.tokens_per_s, 200.0);
  EXPECT_DOUBLE_EQ(r.samples_per_s, 4.0);
  ASSERT_TRUE(r.mfu.has_value());
  EXPECT_DOUBLE_EQ(*r.mfu, 4000.0 / 2.0 / (100.0 * 2));
  EXPECT_EQ(r.total_tokens, 400);
  t.add_step({1.0, 3e-4, 0.1, 50, 2, 0}, 4.0);
  LogRecord r2 = t.take_record(4.0);
  EXPECT_DOUBLE_EQ(r2.loss, 1.0);
  EXPECT_DOUBLE_EQ(r2.tokens_per_s, 25.0);  // the new window only
  EXPECT_DOUBLE_EQ(t.mean_loss(), 7.0 / 3.0);
  EXPECT_FALSE(MetricsTracker(10, 5, 1, std::nullopt, 0).take_record(1).mfu.has_value());
}

TEST(Metrics, ResumedTrackerCountsFromItsStart) {
  MetricsTracker t(10, 5, 1, std::nullopt, 100.0, /*start_step=*/5, /*tokens_seen=*/1000);
  t.add_step({1.0, 1e-4, 0.1, 20, 1, 0}, 110.0);
  LogRecord r = t.take_record(110.0);
  EXPECT_EQ(r.current_steps, 6);
  EXPECT_DOUBLE_EQ(r.remaining_s, 40.0);  // 10 s for this run's 1 step, 4 left
  EXPECT_EQ(r.total_tokens, 1020);
  EXPECT_DOUBLE_EQ(r.epoch, 1.2);
}

TEST(TrainerLog, JsonlLinesHaveLlamaFactoryFields) {
  LogRecord r;
  r.current_steps = 10;
  r.total_steps = 48;
  r.loss = 1.234567;
  r.lr = 9.5e-5;
  r.epoch = 0.625;
  r.percentage = 20.83333;
  r.elapsed_s = 65;
  r.remaining_s = 3725;
  r.throughput = 1234.5678;
  r.total_tokens = 40000;
  r.grad_norm = 0.75;
  json j = log_line(r);
  for (const char* k : {"current_steps", "total_steps", "loss", "lr", "epoch", "percentage", "elapsed_time",
                        "remaining_time", "throughput", "total_tokens", "grad_norm"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_FALSE(j.contains("mfu"));  // unknown peak: left out, as LLaMA-Factory drops None values
  EXPECT_FALSE(j.contains("vram_allocated"));
  EXPECT_DOUBLE_EQ(j["loss"].get<double>(), 1.2346);
  EXPECT_DOUBLE_EQ(j["percentage"].get<double>(), 20.83);
  EXPECT_EQ(j["elapsed_time"], "0:01:05");
  EXPECT_EQ(j["remaining_time"], "1:02:05");
  EXPECT_DOUBLE_EQ(j["throughput"].get<double>(), 1234.57);
  json h = log_history_entry(r);
  EXPECT_EQ(h["step"], 10);
  EXPECT_DOUBLE_EQ(h["learning_rate"].get<double>(), 9.5e-5);

  TempDir dir;
  {
    TrainerLogFile f(dir.path(), true);
    f.append(j);
    r.current_steps = 20;
    f.append(log_line(r));
  }
  std::string text = read_file(dir / "trainer_log.jsonl");
  ASSERT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
  EXPECT_EQ(json::parse(text.substr(0, text.find('\n')))["current_steps"], 10);
  { TrainerLogFile(dir.path(), false).append(log_line(r)); }  // a resume appends
  text = read_file(dir / "trainer_log.jsonl");
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3);
  { TrainerLogFile(dir.path(), true).append(log_line(r)); }  // a fresh run starts over
  text = read_file(dir / "trainer_log.jsonl");
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);
}

TEST(TrainerLog, TrainerStateHasHfShapeAndRoundTrips) {
  TrainerState s;
  s.global_step = 48;
  s.max_steps = 48;
  s.epoch = 3.0;
  s.num_train_epochs = 3;
  s.logging_steps = 10;
  s.save_steps = 500;
  s.train_batch_size = 2;
  s.total_flos = 1.5e15;
  s.log_history.push_back({{"epoch", 0.625}, {"loss", 1.5}, {"learning_rate", 1e-4}, {"step", 10}});
  std::string text = s.dump();
  // HF: json.dumps(asdict(state), indent=2, sort_keys=True) + "\n".
  EXPECT_EQ(
      text.rfind("{\n  \"best_global_step\": null,\n  \"best_metric\": null,\n  \"best_model_checkpoint\": null,", 0),
      0u)
      << text.substr(0, 200);
  EXPECT_EQ(text.back(), '\n');
  json j = json::parse(text);
  std::set<std::string> keys;
  for (auto& [k, v] : j.items()) keys.insert(k);
  for (const char* k : {"log_history", "global_step", "max_steps", "num_train_epochs", "logging_steps", "save_steps",
                        "train_batch_size", "best_model_checkpoint", "epoch", "total_flos", "is_world_process_zero",
                        "stateful_callbacks", "trial_name", "trial_params"})
    EXPECT_TRUE(keys.count(k)) << k;
  EXPECT_TRUE(j["best_model_checkpoint"].is_null());
  TempDir dir;
  s.write(dir / "trainer_state.json");
  TrainerState back = TrainerState::read(dir / "trainer_state.json");
  EXPECT_EQ(back.global_step, 48);
  EXPECT_EQ(back.log_history, s.log_history);
  EXPECT_EQ(back.train_batch_size, 2);
  write_file(dir / "bad.json", "{\"global_step\": 3}");
  EXPECT_THROW(TrainerState::read(dir / "bad.json"), zlora::Error);
}

TEST(TrainerLog, TrainResultsAndAllResults) {
  TempDir dir;
  write_file(dir / "all_results.json", "{\"eval_loss\": 1.5}");
  TrainResults r;
  r.train_runtime = 123.456789;
  r.num_samples = 768;
  r.num_steps = 48;
  r.train_loss = 1.25;
  r.total_flos = 2e15;
  r.epoch = 3.0;
  write_train_results(dir.path(), r);
  json t = json::parse(read_file(dir / "train_results.json"));
  EXPECT_DOUBLE_EQ(t["train_runtime"].get<double>(), 123.4568);
  EXPECT_DOUBLE_EQ(t["train_samples_per_second"].get<double>(), std::round(768 / 123.4568 * 1000) / 1000);
  EXPECT_DOUBLE_EQ(t["train_steps_per_second"].get<double>(), std::round(48 / 123.4568 * 1000) / 1000);
  EXPECT_DOUBLE_EQ(t["train_loss"].get<double>(), 1.25);
  EXPECT_DOUBLE_EQ(t["total_flos"].get<double>(), 2e15);
  EXPECT_DOUBLE_EQ(t["epoch"].get<double>(), 3.0);
  EXPECT_EQ(t.size(), 6u);
  json all = json::parse(read_file(dir / "all_results.json"));
  EXPECT_DOUBLE_EQ(all["eval_loss"].get<double>(), 1.5);
  EXPECT_EQ(all["train_loss"], t["train_loss"]);
  EXPECT_NE(read_file(dir / "train_results.json").find("\n    \"epoch\""), std::string::npos);  // indent 4
}

TEST(Plot, SmoothingIsLlamaFactoryEma) {
  std::vector<double> v = {1.0, 2.0};
  double w = 1.8 * (1.0 / (1.0 + std::exp(-0.05 * 2)) - 0.5);
  auto s = smooth_loss(v);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_DOUBLE_EQ(s[0], 1.0);  // seeded with the first value
  EXPECT_NEAR(s[1], w * 1.0 + (1 - w) * 2.0, 1e-15);
  std::vector<double> many(200, 0.0);
  many[0] = 10;
  auto m = smooth_loss(many);
  double w200 = 1.8 * (1.0 / (1.0 + std::exp(-10.0)) - 0.5);
  EXPECT_NEAR(m[1], 10 * w200, 1e-12);
  EXPECT_TRUE(smooth_loss({}).empty());
}

namespace {
void write_log(const std::filesystem::path& dir, int n) {
  std::string text;
  for (int i = 1; i <= n; ++i)
    text += json{{"current_steps", i * 10}, {"total_steps", n * 10}, {"loss", 2.0 / i + 0.1 * (i % 3)}}.dump() + "\n";
  text += json{{"current_steps", n * 10}, {"total_steps", n * 10}, {"train_runtime", 5.0}}.dump() + "\n";  // no loss
  write_file(dir / "trainer_log.jsonl", text);
}
uint32_t be32(const std::string& s, size_t at) {
  return (uint32_t(uint8_t(s[at])) << 24) | (uint32_t(uint8_t(s[at + 1])) << 16) | (uint32_t(uint8_t(s[at + 2])) << 8) |
         uint32_t(uint8_t(s[at + 3]));
}
}  // namespace

TEST(Plot, ReadsLossPointsAndRefusesBadLogs) {
  TempDir dir;
  EXPECT_THROW(read_loss_points(dir / "missing"), zlora::Error);
  try {
    read_loss_points(dir.path());
    FAIL();
  } catch (const zlora::Error& e) {
    EXPECT_NE(std::string(e.what()).find("trainer_log.jsonl' not found"), std::string::npos) << e.what();
  }
  write_file(dir / "trainer_log.jsonl", "{\"current_steps\": 1, \"total_steps\": 5}\n");
  try {
    read_loss_points(dir.path());
    FAIL();
  } catch (const zlora::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no loss points"), std::string::npos) << e.what();
  }
  write_file(dir / "trainer_log.jsonl",
             "{\"current_steps\": 1, \"loss\": 2}\nnot json\n{\"current_steps\": 2, \"loss\": 1}\n");
  EXPECT_THROW(read_loss_points(dir.path()), zlora::Error);
  // A run killed while appending leaves one unterminated line: the complete ones still plot.
  write_file(dir / "trainer_log.jsonl", "{\"current_steps\": 1, \"loss\": 2}\n{\"current_steps\": 2, \"lo");
  auto pts = read_loss_points(dir.path());
  ASSERT_EQ(pts.size(), 1u);
  EXPECT_DOUBLE_EQ(pts[0].loss, 2.0);
  write_log(dir.path(), 7);
  pts = read_loss_points(dir.path());
  ASSERT_EQ(pts.size(), 7u);
  EXPECT_DOUBLE_EQ(pts[6].step, 70);
  EXPECT_DOUBLE_EQ(pts[1].loss, 1.2);
}

TEST(Plot, SvgHasTitleBothCurvesAndAxes) {
  std::vector<LossPoint> pts = {{10, 2.0}, {20, 1.5}, {30, 1.2}, {40, 1.3}};
  std::string svg = render_loss_svg(pts, "training loss of out<&>");
  EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_NE(svg.find(">training loss of out&lt;&amp;&gt;</text>"), std::string::npos);
  EXPECT_NE(svg.find(">step</text>"), std::string::npos);
  EXPECT_NE(svg.find(">loss</text>"), std::string::npos);
  EXPECT_NE(svg.find(">original</text>"), std::string::npos);
  EXPECT_NE(svg.find(">smoothed</text>"), std::string::npos);
  // Two polylines of 4 points each, the raw one at alpha 0.4.
  size_t a = svg.find("<polyline"), b = svg.find("<polyline", a + 1);
  ASSERT_NE(b, std::string::npos);
  EXPECT_NE(svg.substr(a, b - a).find("stroke-opacity=\"0.4\""), std::string::npos);
  auto count_points = [&](size_t at) {
    size_t p = svg.find("points=\"", at) + 8, e = svg.find('"', p);
    std::string list = svg.substr(p, e - p);
    return std::count(list.begin(), list.end(), ',');
  };
  EXPECT_EQ(count_points(a), 4);
  EXPECT_EQ(count_points(b), 4);
  EXPECT_NE(svg.find(">10</text>"), std::string::npos);  // x ticks every 5 steps from 10: 10, 15, ..., 40
  EXPECT_NE(svg.find(">40</text>"), std::string::npos);
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '<') - std::count(svg.begin(), svg.end(), '>'), 0);
}

TEST(Plot, RasterDrawsCurvesTextAndFrame) {
  std::vector<LossPoint> pts = {{1, 3.0}, {2, 2.0}, {3, 1.5}, {4, 1.0}};
  Image img = render_loss_image(pts, "training loss of x");
  ASSERT_EQ(img.width, 640);
  ASSERT_EQ(img.height, 480);
  ASSERT_EQ(img.rgb.size(), 640u * 480 * 3);
  auto px = [&](int x, int y) { return &img.rgb[(size_t(y) * 640 + x) * 3]; };
  long long blue = 0, black_title = 0;
  for (int y = 0; y < 480; ++y)
    for (int x = 0; x < 640; ++x) {
      const uint8_t* p = px(x, y);
      if (p[0] == 0x1f && p[1] == 0x77 && p[2] == 0xb4) ++blue;  // the opaque smoothed curve
      if (y < 35 && p[0] == 0 && p[1] == 0 && p[2] == 0) ++black_title;
    }
  EXPECT_GT(blue, 300);        // a 2-pixel curve across ~550 px, plus the legend sample
  EXPECT_GT(black_title, 50);  // the title's glyphs
  const uint8_t* corner = px(2, 470);
  EXPECT_EQ(corner[0], 255);  // white background
  const uint8_t* frame = px(70, 200);
  EXPECT_EQ(frame[0], 0);  // the left axis
}

TEST(Plot, PlotLossWritesFilesAndCliRedraws) {
  TempDir dir;
  write_log(dir.path(), 12);
  PlotFiles f = plot_loss(dir.path());
  EXPECT_TRUE(std::filesystem::is_regular_file(f.svg));
  EXPECT_NE(read_file(f.svg).find("training loss of " + dir.path().string()), std::string::npos);
  if (png_supported()) {
    std::string png = read_file(dir / "training_loss.png");
    ASSERT_GT(png.size(), 33u);
    EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
    EXPECT_EQ(png.substr(12, 4), "IHDR");
    EXPECT_EQ(be32(png, 16), 640u);
    EXPECT_EQ(be32(png, 20), 480u);
    EXPECT_EQ(png.substr(png.size() - 8, 4), "IEND");
  } else {
    EXPECT_THROW(write_png(dir / "x.png", render_loss_image({{1, 1}}, "t")), zlora::Error);
  }
  std::filesystem::remove(f.svg);
  auto ok = zlora::test::run_zlora("plot " + dir.path().string());
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("Figure saved at: " + (dir / "training_loss.svg").string()), std::string::npos) << ok.output;
  EXPECT_TRUE(std::filesystem::is_regular_file(dir / "training_loss.svg"));
  auto missing = zlora::test::run_zlora("plot " + (dir / "nope").string());
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("does not exist"), std::string::npos) << missing.output;
  auto none = zlora::test::run_zlora("plot");
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.output.find("takes one OUTPUT_DIR"), std::string::npos) << none.output;
}
