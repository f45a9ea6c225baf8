// The scaling sweep's plot: two panels, tokens/s and scaling efficiency against the node count, one
// series per (ranks per node, ZeRO stage, offload). The SVG is written by hand; the raster (for the PNG)
// draws the same geometry with the 5x7 bitmap font of the loss plot.
#include "../train/font5x7.h"
#include "zlora/cli/scaling_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <tuple>

namespace zlora::cli::scaling {

namespace {

// matplotlib's tab10.
constexpr unsigned kPalette[10] = {0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd,
                                   0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22, 0x17becf};

struct Series {
  std::string label;
  unsigned colour = 0;
  std::vector<double> nodes, tokens, efficiency;  // efficiency NaN where n/a
};

struct Panel {
  double x0, x1, y0, y1;          // plot area in pixels (y0 top)
  double xmin, xmax, ymin, ymax;  // data range
  std::vector<double> xticks, yticks;
  int ydecimals = 0;
  std::string ylabel;
  double px(double x) const { return x0 + (x - xmin) / (xmax - xmin) * (x1 - x0); }
  double py(double y) const { return y1 - (y - ymin) / (ymax - ymin) * (y1 - y0); }
};

struct Figure {
  int width = 960, height = 480;
  std::vector<Series> series;
  Panel panels[2];
};

double nice_step(double range, int target) {
  double raw = range / target;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double f = raw / mag;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

std::vector<Series> make_series(const std::vector<RunRow>& rows) {
  std::map<std::tuple<int, int, std::string>, Series> by_key;
  for (const auto& r : rows) {
    if (r.status != "ok" || !r.tokens_per_s) continue;
    Series& s = by_key[{r.ranks_per_node, r.zero_stage, r.offload}];
    s.label = fmt::format("{} rank(s)/node, ZeRO {}, offload {}", r.ranks_per_node, r.zero_stage, r.offload);
    s.nodes.push_back(r.nodes);
    s.tokens.push_back(*r.tokens_per_s);
    s.efficiency.push_back(r.efficiency ? *r.efficiency : std::nan(""));
  }
  std::vector<Series> out;
  for (auto& [key, s] : by_key) {
    s.colour = kPalette[out.size() % 10];
    out.push_back(std::move(s));
  }
  return out;
}

Figure make_figure(const std::vector<RunRow>& rows) {
  Figure f;
  f.series = make_series(rows);
  double nmax = 1, tmax = 0, emax = 1.0;
  std::vector<double> node_counts;
  for (const auto& s : f.series)
    for (size_t i = 0; i < s.nodes.size(); ++i) {
      nmax = std::max(nmax, s.nodes[i]);
      tmax = std::max(tmax, s.tokens[i]);
      if (!std::isnan(s.efficiency[i])) emax = std::max(emax, s.efficiency[i]);
      node_counts.push_back(s.nodes[i]);
    }
  std::sort(node_counts.begin(), node_counts.end());
  node_counts.erase(std::unique(node_counts.begin(), node_counts.end()), node_counts.end());
  if (node_counts.empty()) node_counts = {1};
  if (tmax <= 0) tmax = 1;
  const int legend_h = 18 * int(std::max<size_t>(1, f.series.size()));
  f.height = 420 + legend_h;
  for (int p = 0; p < 2; ++p) {
    Panel& pn = f.panels[p];
    pn.x0 = p == 0 ? 80 : 560;
    pn.x1 = pn.x0 + 380;
    pn.y0 = 50;
    pn.y1 = 360;
    pn.xmin = 0.5;
    pn.xmax = nmax + 0.5;
    pn.xticks = node_counts;
    pn.ymin = 0;
    pn.ymax = (p == 0 ? tmax : emax) * 1.1;
    double step = nice_step(pn.ymax, 5);
    for (double t = 0; t <= pn.ymax + 1e-9 * step; t += step) pn.yticks.push_back(t);
    pn.ydecimals = std::max(0, int(-std::floor(std::log10(step) + 1e-9)));
    pn.ylabel = p == 0 ? "tokens/s" : "scaling efficiency";
  }
  return f;
}

std::string hex(unsigned c) { return fmt::format("#{:06x}", c); }

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char ch : s) out += ch == '&' ? "&amp;" : ch == '<' ? "&lt;" : ch == '>' ? "&gt;" : std::string(1, ch);
  return out;
}

std::string tick(double v, int decimals) { return fmt::format("{:.{}f}", std::abs(v) < 1e-12 ? 0.0 : v, decimals); }

void svg_panel(std::ostringstream& s, const Figure& f, int p) {
  const Panel& pn = f.panels[p];
  auto num = [](double v) { return fmt::format("{:.2f}", v); };
  s << "<g font-size=\"10\">\n";
  for (double t : pn.xticks)
    s << "<line x1=\"" << num(pn.px(t)) << "\" y1=\"" << pn.y1 << "\" x2=\"" << num(pn.px(t)) << "\" y2=\"" << pn.y1 + 5
      << "\" stroke=\"black\"/><text x=\"" << num(pn.px(t)) << "\" y=\"" << pn.y1 + 17 << "\" text-anchor=\"middle\">"
      << tick(t, 0) << "</text>\n";
  for (double t : pn.yticks)
    s << "<line x1=\"" << pn.x0 << "\" y1=\"" << num(pn.py(t)) << "\" x2=\"" << pn.x1 << "\" y2=\"" << num(pn.py(t))
      << "\" stroke=\"#e0e0e0\"/><text x=\"" << pn.x0 - 6 << "\" y=\"" << num(pn.py(t) + 3.5)
      << "\" text-anchor=\"end\">" << tick(t, pn.ydecimals) << "</text>\n";
  s << "</g>\n";
  if (p == 1)  // ideal scaling
    s << "<line x1=\"" << pn.x0 << "\" y1=\"" << num(pn.py(1)) << "\" x2=\"" << pn.x1 << "\" y2=\"" << num(pn.py(1))
      << "\" stroke=\"black\" stroke-dasharray=\"4 3\"/>\n";
  for (const auto& se : f.series) {
    const std::vector<double>& ys = p == 0 ? se.tokens : se.efficiency;
    s << "<polyline fill=\"none\" stroke=\"" << hex(se.colour) << "\" stroke-width=\"2\" points=\"";
    bool first = true;
    for (size_t i = 0; i < ys.size(); ++i)
      if (!std::isnan(ys[i]))
        s << (first ? "" : " ") << num(pn.px(se.nodes[i])) << "," << num(pn.py(ys[i])), first = false;
    s << "\"/>\n";
    for (size_t i = 0; i < ys.size(); ++i)
      if (!std::isnan(ys[i]))
        s << "<circle cx=\"" << num(pn.px(se.nodes[i])) << "\" cy=\"" << num(pn.py(ys[i])) << "\" r=\"3.5\" fill=\""
          << hex(se.colour) << "\"/>\n";
  }
  s << "<rect x=\"" << pn.x0 << "\" y=\"" << pn.y0 << "\" width=\"" << pn.x1 - pn.x0 << "\" height=\"" << pn.y1 - pn.y0
    << "\" fill=\"none\" stroke=\"black\"/>\n";
  s << "<text x=\"" << (pn.x0 + pn.x1) / 2 << "\" y=\"" << pn.y1 + 36 << "\" text-anchor=\"middle\" font-size=\"12\">"
    << "nodes</text>\n";
  double cy = (pn.y0 + pn.y1) / 2, lx = pn.x0 - 55;
  s << "<text x=\"" << lx << "\" y=\"" << cy << "\" text-anchor=\"middle\" font-size=\"12\" transform=\"rotate(-90 "
    << lx << " " << cy << ")\">" << pn.ylabel << "</text>\n";
}

// ---- raster ----

struct Canvas {
  Raster img;
  void put(int x, int y, unsigned c) {
    if (x < 0 || y < 0 || x >= img.width || y >= img.height) return;
    unsigned char* p = &img.rgb[(size_t(y) * img.width + x) * 3];
    p[0] = (c >> 16) & 0xff, p[1] = (c >> 8) & 0xff, p[2] = c & 0xff;
  }
  void line(double fx0, double fy0, double fx1, double fy1, unsigned c, int thick, int dash = 0) {
    int xa = int(std::lround(fx0)), ya = int(std::lround(fy0)), xb = int(std::lround(fx1)), yb = int(std::lround(fy1));
    int dx = std::abs(xb - xa), dy = -std::abs(yb - ya), sx = xa < xb ? 1 : -1, sy = ya < yb ? 1 : -1;
    int err = dx + dy, n = 0;
    for (;; ++n) {
      if (!dash || (n / dash) % 2 == 0)
        for (int t = 0; t < thick; ++t) -dy > dx ? put(xa + t, ya, c) : put(xa, ya + t, c);
      if (xa == xb && ya == yb) break;
      int e2 = 2 * err;
      if (e2 >= dy) err += dy, xa += sx;
      if (e2 <= dx) err += dx, ya += sy;
    }
  }
  void dot(double fx, double fy, unsigned c) {
    for (int a = -3; a <= 3; ++a)
      for (int b = -3; b <= 3; ++b)
        if (a * a + b * b <= 10) put(int(std::lround(fx)) + a, int(std::lround(fy)) + b, c);
  }
  // Text with its top-left at (x, y); anchor: 0 left, 1 centre, 2 right.
  void text(int x, int y, const std::string& s, int anchor, unsigned c) {
    int w = int(s.size()) * (train::font::kWidth + 1) - 1;
    if (anchor == 1) x -= w / 2;
    if (anchor == 2) x -= w;
    for (size_t i = 0; i < s.size(); ++i)
      for (int gy = 0; gy < train::font::kHeight; ++gy)
        for (int gx = 0; gx < train::font::kWidth; ++gx)
          if (train::font::ink(s[i], gx, gy)) put(x + int(i) * (train::font::kWidth + 1) + gx, y + gy, c);
  }
};

void raster_panel(Canvas& cv, const Figure& f, int p) {
  const Panel& pn = f.panels[p];
  for (double t : pn.yticks) {
    cv.line(pn.x0, pn.py(t), pn.x1, pn.py(t), 0xe0e0e0, 1);
    cv.text(int(pn.x0) - 6, int(std::lround(pn.py(t))) - 3, tick(t, pn.ydecimals), 2, 0);
  }
  for (double t : pn.xticks) {
    cv.line(pn.px(t), pn.y1, pn.px(t), pn.y1 + 5, 0, 1);
    cv.text(int(std::lround(pn.px(t))), int(pn.y1) + 9, tick(t, 0), 1, 0);
  }
  if (p == 1) cv.line(pn.x0, pn.py(1), pn.x1, pn.py(1), 0, 1, 4);
  for (const auto& se : f.series) {
    const std::vector<double>& ys = p == 0 ? se.tokens : se.efficiency;
    int last = -1;
    for (size_t i = 0; i < ys.size(); ++i) {
      if (std::isnan(ys[i])) continue;
      if (last >= 0) cv.line(pn.px(se.nodes[last]), pn.py(ys[last]), pn.px(se.nodes[i]), pn.py(ys[i]), se.colour, 2);
      cv.dot(pn.px(se.nodes[i]), pn.py(ys[i]), se.colour);
      last = int(i);
    }
  }
  cv.line(pn.x0, pn.y0, pn.x1, pn.y0, 0, 1);
  cv.line(pn.x0, pn.y1, pn.x1, pn.y1, 0, 1);
  cv.line(pn.x0, pn.y0, pn.x0, pn.y1, 0, 1);
  cv.line(pn.x1, pn.y0, pn.x1, pn.y1, 0, 1);
  cv.text(int((pn.x0 + pn.x1) / 2), int(pn.y1) + 26, "nodes", 1, 0);
  cv.text(int(pn.x0), int(pn.y0) - 12, pn.ylabel, 0, 0);
}

}  // namespace

std::string render_svg(const std::vector<RunRow>& rows, const std::string& title) {
  Figure f = make_figure(rows);
  std::ostringstream s;
  s << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << f.width << "\" height=\"" << f.height
    << "\" viewBox=\"0 0 " << f.width << " " << f.height << "\" font-family=\"DejaVu Sans, Arial, sans-serif\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << f.width / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">" << xml_escape(title)
    << "</text>\n";
  for (int p = 0; p < 2; ++p) svg_panel(s, f, p);
  int y = 410;
  if (f.series.empty()) s << "<text x=\"80\" y=\"" << y + 4 << "\" font-size=\"11\">no successful run to plot</text>\n";
  for (const auto& se : f.series) {
    s << "<line x1=\"80\" y1=\"" << y << "\" x2=\"104\" y2=\"" << y << "\" stroke=\"" << hex(se.colour)
      << "\" stroke-width=\"2\"/><text x=\"110\" y=\"" << y + 4 << "\" font-size=\"11\">" << xml_escape(se.label)
      << "</text>\n";
    y += 18;
  }
  s << "</svg>\n";
  return s.str();
}

Raster render_raster(const std::vector<RunRow>& rows, const std::string& title) {
  Figure f = make_figure(rows);
  Canvas cv;
  cv.img.width = f.width;
  cv.img.height = f.height;
  cv.img.rgb.assign(size_t(f.width) * f.height * 3, 255);
  cv.text(f.width / 2, 14, title, 1, 0);
  for (int p = 0; p < 2; ++p) raster_panel(cv, f, p);
  int y = 410;
  if (f.series.empty()) cv.text(80, y - 3, "no successful run to plot", 0, 0);
  for (const auto& se : f.series) {
    cv.line(80, y, 104, y, se.colour, 2);
    cv.text(110, y - 3, se.label, 0, 0);
    y += 18;
  }
  return std::move(cv.img);
}

}  // namespace zlora::cli::scaling
