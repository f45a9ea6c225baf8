// The loss plot of LLaMA-Factory's plot_loss, without matplotlib: raw loss (alpha 0.4) and its smoothed
// curve against the step, title "training loss of <output_dir>". Written as training_loss.svg (hand-made
// SVG) and, where libpng was found at build time, training_loss.png (rasterised here, 5x7 bitmap font).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace zlora::train {

struct LossPoint {
  double step = 0;
  double loss = 0;
};

// LLaMA-Factory's smoothing: a TensorBoard-style EMA seeded with the first value,
// s_i = w * s_{i-1} + (1 - w) * x_i with w = 1.8 * (sigmoid(0.05 * N) - 0.5), N the number of points.
std::vector<double> smooth_loss(const std::vector<double>& values);

// The (current_steps, loss) pairs of output_dir/trainer_log.jsonl, in file order; lines without a loss
// are skipped. Throws zlora::Error when the directory or file is missing, a line is not JSON, or no line
// has a loss.
// `key`: the metric read ("loss", or "eval_loss" for the evaluation lines).
std::vector<LossPoint> read_loss_points(const std::filesystem::path& output_dir, const std::string& key = "loss");

std::string render_loss_svg(const std::vector<LossPoint>& points, const std::string& title,
                            const std::string& ylabel = "loss");

// An RGB raster (row-major, 3 bytes per pixel) of the same chart.
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;
};
Image render_loss_image(const std::vector<LossPoint>& points, const std::string& title, int width = 640,
                        int height = 480, const std::string& ylabel = "loss");

// True when this build can write PNG files (libpng found by CMake).
bool png_supported();
// Writes an 8-bit RGB PNG atomically; throws zlora::Error when PNG support is not built in.
void write_png(const std::filesystem::path& path, const Image& image);

struct PlotFiles {
  std::filesystem::path svg;
  std::filesystem::path png;  // empty without PNG support
};
// Reads trainer_log.jsonl from output_dir and writes training_loss.svg (+ .png) there. `title_dir` is the
// directory name shown in the title (LLaMA-Factory shows output_dir as configured); empty = output_dir.
// `key` "eval_loss" writes training_eval_loss.svg (+ .png) from the evaluation lines, as LLaMA-Factory
// plots each of its keys.
PlotFiles plot_loss(const std::filesystem::path& output_dir, const std::string& title_dir = "",
                    const std::string& key = "loss");

}  // namespace zlora::train
