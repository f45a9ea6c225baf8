#include "zlora/train/plot.h"

#include "font5x7.h"
#include "zlora/core/error.h"
#include "zlora/core/fs.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <sstream>

#ifdef ZLORA_HAVE_PNG
#include <png.h>
#endif

namespace zlora::train {

namespace {

constexpr const char* kBlue = "#1f77b4";  // matplotlib's C0, LLaMA-Factory's colour
constexpr uint8_t kBlueRgb[3] = {0x1f, 0x77, 0xb4};

// Chart geometry shared by the SVG and the raster, so both draw the same picture.
struct Chart {
  int width, height;
  double x0, x1, y0, y1;          // plot area in pixels (y0 top)
  double xmin, xmax, ymin, ymax;  // data range
  std::vector<double> xticks, yticks;
  int xdecimals = 0, ydecimals = 0;
  std::vector<double> steps, raw, smoothed;

  double px(double x) const { return x0 + (x - xmin) / (xmax - xmin) * (x1 - x0); }
  double py(double y) const { return y1 - (y - ymin) / (ymax - ymin) * (y1 - y0); }
};

// A "nice" tick spacing (1, 2 or 5 x 10^k) giving about `target` intervals over `range`.
double nice_step(double range, int target) {
  double raw = range / target;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double f = raw / mag;
  double nice = f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10;
  return nice * mag;
}

std::vector<double> ticks(double lo, double hi, double step) {
  std::vector<double> t;
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + 1e-9 * step; k += 1) t.push_back(k * step);
  return t;
}

int decimals_for(double step) { return std::max(0, int(-std::floor(std::log10(step) + 1e-9))); }

Chart make_chart(const std::vector<LossPoint>& points, int width, int height) {
  ZLORA_REQUIRE(!points.empty(), "no loss points to plot");
  Chart c{};
  c.width = width;
  c.height = height;
  c.x0 = 70;
  c.x1 = width - 20;
  c.y0 = 40;
  c.y1 = height - 50;
  for (const auto& p : points) {
    c.steps.push_back(p.step);
    c.raw.push_back(p.loss);
  }
  c.smoothed = smooth_loss(c.raw);
  c.xmin = *std::min_element(c.steps.begin(), c.steps.end());
  c.xmax = *std::max_element(c.steps.begin(), c.steps.end());
  if (c.xmax - c.xmin < 1e-12) c.xmin -= 1, c.xmax += 1;
  double lo =
      std::min(*std::min_element(c.raw.begin(), c.raw.end()), *std::min_element(c.smoothed.begin(), c.smoothed.end()));
  double hi =
      std::max(*std::max_element(c.raw.begin(), c.raw.end()), *std::max_element(c.smoothed.begin(), c.smoothed.end()));
  double pad = hi - lo > 1e-12 ? 0.05 * (hi - lo) : std::max(0.5, 0.05 * std::abs(hi));
  c.ymin = lo - pad;
  c.ymax = hi + pad;
  double xs = nice_step(c.xmax - c.xmin, 6), ys = nice_step(c.ymax - c.ymin, 6);
  c.xticks = ticks(c.xmin, c.xmax, xs);
  c.yticks = ticks(c.ymin, c.ymax, ys);
  c.xdecimals = decimals_for(xs);
  c.ydecimals = decimals_for(ys);
  return c;
}

std::string tick_label(double v, int decimals) {
  if (std::abs(v) < 1e-12) v = 0;  // no "-0.0"
  return fmt::format("{:.{}f}", v, decimals);
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

// ---- raster drawing ----

struct Canvas {
  Image img;
  void blend(int x, int y, const uint8_t rgb[3], double alpha) {
    if (x < 0 || y < 0 || x >= img.width || y >= img.height) return;
    uint8_t* p = &img.rgb[(size_t(y) * img.width + x) * 3];
    for (int k = 0; k < 3; ++k) p[k] = uint8_t(std::lround(p[k] * (1 - alpha) + rgb[k] * alpha));
  }
  // Bresenham; `thick` 2 also inks the pixel below (or right of) each step for a 2-pixel stroke.
  void line(double fx0, double fy0, double fx1, double fy1, const uint8_t rgb[3], double alpha, int thick) {
    int xa = int(std::lround(fx0)), ya = int(std::lround(fy0)), xb = int(std::lround(fx1)), yb = int(std::lround(fy1));
    int dx = std::abs(xb - xa), dy = -std::abs(yb - ya), sx = xa < xb ? 1 : -1, sy = ya < yb ? 1 : -1;
    bool steep = -dy > dx;
    int err = dx + dy;
    for (;;) {
      blend(xa, ya, rgb, alpha);
      if (thick > 1) steep ? blend(xa + 1, ya, rgb, alpha) : blend(xa, ya + 1, rgb, alpha);
      if (xa == xb && ya == yb) break;
      int e2 = 2 * err;
      if (e2 >= dy) err += dy, xa += sx;
      if (e2 <= dx) err += dx, ya += sy;
    }
  }
  // Text with its top-left at (x, y); anchor: 0 left, 1 centre, 2 right.
  void text(int x, int y, const std::string& s, int scale, int anchor, const uint8_t rgb[3]) {
    int w = int(s.size()) * (font::kWidth + 1) * scale - scale;
    if (anchor == 1) x -= w / 2;
    if (anchor == 2) x -= w;
    for (size_t i = 0; i < s.size(); ++i)
      for (int gy = 0; gy < font::kHeight; ++gy)
        for (int gx = 0; gx < font::kWidth; ++gx)
          if (font::ink(s[i], gx, gy))
            for (int a = 0; a < scale; ++a)
              for (int b = 0; b < scale; ++b)
                blend(x + int(i) * (font::kWidth + 1) * scale + gx * scale + b, y + gy * scale + a, rgb, 1.0);
  }
};

#ifdef ZLORA_HAVE_PNG
void png_append(png_structp png, png_bytep data, png_size_t size) {
  auto* out = static_cast<std::string*>(png_get_io_ptr(png));
  out->append(reinterpret_cast<const char*>(data), size);
}
void png_flush_noop(png_structp) {}

// Kept free of C++ objects with destructors between setjmp and libpng's longjmp. Returns false on error.
bool encode_png(const Image* image, std::string* out) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, info ? &info : nullptr);
    return false;
  }
  png_set_write_fn(png, out, png_append, png_flush_noop);
  png_set_IHDR(png, info, png_uint_32(image->width), png_uint_32(image->height), 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < image->height; ++y)
    png_write_row(png, const_cast<png_bytep>(&image->rgb[size_t(y) * image->width * 3]));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}
#endif

}  // namespace

std::vector<double> smooth_loss(const std::vector<double>& values) {
  std::vector<double> out;
  if (values.empty()) return out;
  double n = double(values.size());
  double weight = 1.8 * (1.0 / (1.0 + std::exp(-0.05 * n)) - 0.5);
  double last = values.front();
  for (double v : values) {
    last = last * weight + (1.0 - weight) * v;
    out.push_back(last);
  }
  return out;
}

std::vector<LossPoint> read_loss_points(const std::filesystem::path& output_dir, const std::string& key) {
  ZLORA_REQUIRE(std::filesystem::is_directory(output_dir), "output directory '{}' does not exist", output_dir.string());
  auto path = output_dir / "trainer_log.jsonl";
  ZLORA_REQUIRE(std::filesystem::is_regular_file(path),
                "'{}' not found: it is written during training by rank 0 at every logging_steps; was this "
                "directory a zlora (or LLaMA-Factory) output_dir?",
                path.string());
  std::string text = fs::read_file(path);
  std::vector<LossPoint> points;
  size_t pos = 0;
  int line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    bool complete = end != std::string::npos;
    std::string line = text.substr(pos, complete ? end - pos : std::string::npos);
    pos = complete ? end + 1 : text.size();
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      if (!complete) break;  // a run killed while appending leaves at most one unterminated last line
      fail("{}:{}: not a JSON object", path.string(), line_no);
    }
    if (!j.contains(key) || !j[key].is_number()) continue;
    ZLORA_REQUIRE(j.contains("current_steps") && j["current_steps"].is_number(), "{}:{}: {} without current_steps",
                  path.string(), line_no, key == "loss" ? std::string("a loss") : "an " + key);
    points.push_back({j["current_steps"].get<double>(), j[key].get<double>()});
  }
  if (key == "loss")
    ZLORA_REQUIRE(!points.empty(),
                  "'{}' has no loss points to plot (no line with a \"loss\" yet: the first is "
                  "written after logging_steps optimizer steps)",
                  path.string());
  ZLORA_REQUIRE(!points.empty(), "'{}' has no {} points to plot (no evaluation has run)", path.string(), key);
  return points;
}

std::string render_loss_svg(const std::vector<LossPoint>& points, const std::string& title, const std::string& ylabel) {
  Chart c = make_chart(points, 640, 480);
  std::ostringstream s;
  auto num = [](double v) { return fmt::format("{:.2f}", v); };
  s << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << c.width << "\" height=\"" << c.height
    << "\" viewBox=\"0 0 " << c.width << " " << c.height << "\" font-family=\"DejaVu Sans, Arial, sans-serif\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << c.width / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">" << xml_escape(title)
    << "</text>\n";
  s << "<g stroke=\"black\" stroke-width=\"1\" font-size=\"10\">\n";
  for (double t : c.xticks)
    s << "<line x1=\"" << num(c.px(t)) << "\" y1=\"" << c.y1 << "\" x2=\"" << num(c.px(t)) << "\" y2=\"" << c.y1 + 5
      << "\"/><text x=\"" << num(c.px(t)) << "\" y=\"" << c.y1 + 17 << "\" text-anchor=\"middle\" stroke=\"none\">"
      << tick_label(t, c.xdecimals) << "</text>\n";
  for (double t : c.yticks)
    s << "<line x1=\"" << c.x0 - 5 << "\" y1=\"" << num(c.py(t)) << "\" x2=\"" << c.x0 << "\" y2=\"" << num(c.py(t))
      << "\"/><text x=\"" << c.x0 - 8 << "\" y=\"" << num(c.py(t) + 3.5) << "\" text-anchor=\"end\" stroke=\"none\">"
      << tick_label(t, c.ydecimals) << "</text>\n";
  s << "</g>\n";
  auto polyline = [&](const std::vector<double>& ys, const char* extra) {
    s << "<polyline fill=\"none\" stroke=\"" << kBlue << "\" stroke-width=\"1.5\" " << extra << " points=\"";
    for (size_t i = 0; i < ys.size(); ++i) s << (i ? " " : "") << num(c.px(c.steps[i])) << "," << num(c.py(ys[i]));
    s << "\"/>\n";
  };
  polyline(c.raw, "stroke-opacity=\"0.4\"");
  polyline(c.smoothed, "");
  s << "<rect x=\"" << c.x0 << "\" y=\"" << c.y0 << "\" width=\"" << c.x1 - c.x0 << "\" height=\"" << c.y1 - c.y0
    << "\" fill=\"none\" stroke=\"black\"/>\n";
  s << "<text x=\"" << (c.x0 + c.x1) / 2 << "\" y=\"" << c.height - 12 << "\" text-anchor=\"middle\" "
    << "font-size=\"12\">step</text>\n";
  s << "<text x=\"18\" y=\"" << (c.y0 + c.y1) / 2 << "\" text-anchor=\"middle\" font-size=\"12\" "
    << "transform=\"rotate(-90 18 " << (c.y0 + c.y1) / 2 << ")\">" << xml_escape(ylabel) << "</text>\n";
  // Legend, upper right as matplotlib's "best" usually lands for a falling loss.
  double lx = c.x1 - 110, ly = c.y0 + 10;
  s << "<rect x=\"" << lx << "\" y=\"" << ly << "\" width=\"100\" height=\"40\" fill=\"white\" stroke=\"#cccccc\"/>\n"
    << "<line x1=\"" << lx + 8 << "\" y1=\"" << ly + 13 << "\" x2=\"" << lx + 32 << "\" y2=\"" << ly + 13
    << "\" stroke=\"" << kBlue << "\" stroke-opacity=\"0.4\" stroke-width=\"1.5\"/>"
    << "<text x=\"" << lx + 38 << "\" y=\"" << ly + 17 << "\" font-size=\"11\">original</text>\n"
    << "<line x1=\"" << lx + 8 << "\" y1=\"" << ly + 29 << "\" x2=\"" << lx + 32 << "\" y2=\"" << ly + 29
    << "\" stroke=\"" << kBlue << "\" stroke-width=\"1.5\"/>"
    << "<text x=\"" << lx + 38 << "\" y=\"" << ly + 33 << "\" font-size=\"11\">smoothed</text>\n";
  s << "</svg>\n";
  return s.str();
}

Image render_loss_image(const std::vector<LossPoint>& points, const std::string& title, int width, int height,
                        const std::string& ylabel) {
  ZLORA_REQUIRE(width >= 200 && height >= 150, "plot size {}x{} is too small (at least 200x150)", width, height);
  Chart c = make_chart(points, width, height);
  Canvas cv;
  cv.img.width = width;
  cv.img.height = height;
  cv.img.rgb.assign(size_t(width) * height * 3, 255);
  const uint8_t black[3] = {0, 0, 0}, grey[3] = {0xcc, 0xcc, 0xcc};
  int title_scale = int(title.size()) * 12 <= width - 20 ? 2 : 1;
  cv.text(width / 2, 12, title, title_scale, 1, black);
  for (double t : c.xticks) {
    cv.line(c.px(t), c.y1, c.px(t), c.y1 + 5, black, 1, 1);
    cv.text(int(std::lround(c.px(t))), int(c.y1) + 9, tick_label(t, c.xdecimals), 1, 1, black);
  }
  for (double t : c.yticks) {
    cv.line(c.x0 - 5, c.py(t), c.x0, c.py(t), black, 1, 1);
    cv.text(int(c.x0) - 8, int(std::lround(c.py(t))) - 3, tick_label(t, c.ydecimals), 1, 2, black);
  }
  for (size_t i = 1; i < c.steps.size(); ++i)
    cv.line(c.px(c.steps[i - 1]), c.py(c.raw[i - 1]), c.px(c.steps[i]), c.py(c.raw[i]), kBlueRgb, 0.4, 2);
  for (size_t i = 1; i < c.steps.size(); ++i)
    cv.line(c.px(c.steps[i - 1]), c.py(c.smoothed[i - 1]), c.px(c.steps[i]), c.py(c.smoothed[i]), kBlueRgb, 1.0, 2);
  if (c.steps.size() == 1) cv.blend(int(c.px(c.steps[0])), int(c.py(c.raw[0])), kBlueRgb, 1.0);
  // Frame.
  cv.line(c.x0, c.y0, c.x1, c.y0, black, 1, 1);
  cv.line(c.x0, c.y1, c.x1, c.y1, black, 1, 1);
  cv.line(c.x0, c.y0, c.x0, c.y1, black, 1, 1);
  cv.line(c.x1, c.y0, c.x1, c.y1, black, 1, 1);
  cv.text(int((c.x0 + c.x1) / 2), height - 20, "step", 1, 1, black);
  cv.text(8, int((c.y0 + c.y1) / 2) - 3, ylabel, 1, 0, black);
  // Legend.
  int lx = int(c.x1) - 100, ly = int(c.y0) + 10;
  for (int y = ly; y < ly + 34; ++y)
    for (int x = lx; x < lx + 92; ++x) cv.blend(x, y, grey, (y == ly || y == ly + 33 || x == lx || x == lx + 91));
  cv.line(lx + 6, ly + 10, lx + 28, ly + 10, kBlueRgb, 0.4, 2);
  cv.text(lx + 34, ly + 7, "original", 1, 0, black);
  cv.line(lx + 6, ly + 23, lx + 28, ly + 23, kBlueRgb, 1.0, 2);
  cv.text(lx + 34, ly + 20, "smoothed", 1, 0, black);
  return std::move(cv.img);
}

bool png_supported() {
#ifdef ZLORA_HAVE_PNG
  return true;
#else
  return false;
#endif
}

void write_png(const std::filesystem::path& path, const Image& image) {
#ifdef ZLORA_HAVE_PNG
  ZLORA_REQUIRE(image.width > 0 && image.height > 0 && image.rgb.size() == size_t(image.width) * image.height * 3,
                "write_png: image buffer does not match {}x{}", image.width, image.height);
  std::string bytes;
  ZLORA_REQUIRE(encode_png(&image, &bytes), "libpng failed to encode '{}'", path.string());
  fs::write_file_atomic(path, bytes);
#else
  fail(
      "cannot write '{}': this zlora was built without libpng (install libpng-dev and rebuild); the SVG plot is "
      "written instead",
      path.string());
#endif
}

PlotFiles plot_loss(const std::filesystem::path& output_dir, const std::string& title_dir, const std::string& key) {
  std::vector<LossPoint> points = read_loss_points(output_dir, key);
  std::string title = "training " + key + " of " + (title_dir.empty() ? output_dir.string() : title_dir);
  PlotFiles files;
  files.svg = output_dir / ("training_" + key + ".svg");
  fs::write_file_atomic(files.svg, render_loss_svg(points, title, key));
  if (png_supported()) {
    files.png = output_dir / ("training_" + key + ".png");
    write_png(files.png, render_loss_image(points, title, 640, 480, key));
  }
  return files;
}

}  // namespace zlora::train
