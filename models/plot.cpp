// models/plot.cpp - the SVG charts of models/plot.h: axis planning (ranges and
// nice ticks), layout, and the SVG text.
//
// Coordinates: data values map linearly (or by log10) onto the plot area's
// pixels, y growing upwards. A line segment is clipped to the plot area here
// (Liang-Barsky), not by an SVG clip path, so a far-away point never puts a
// huge number into the file; a dot outside the area is left out.
#include "models/plot.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "nn/files.h"
#include "tensor/error.h"

namespace nala {
namespace plot {

const char* const kSvgMarker = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- nala plot -->\n";

namespace {

const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr int kMarkAllBelow = 40;
constexpr size_t kThinAbove = 4096;  // a line of more points is thinned to 4 per pixel column  // a line of at most this many points also gets a dot per point

std::string num(double v, int decimals = 2) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  if (std::strcmp(buf, "-0.00") == 0 || std::strcmp(buf, "-0.0") == 0) return decimals == 2 ? "0.00" : "0.0";
  return buf;
}

bool valid_color(const std::string& c) {
  if ((c.size() != 4 && c.size() != 7) || c[0] != '#') return false;
  for (size_t i = 1; i < c.size(); i++)
    if (!std::isxdigit((unsigned char)c[i])) return false;
  return true;
}

// Characters (code points) of UTF-8 text, for width estimates.
size_t text_chars(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}
double text_width(const std::string& s, double font_px) { return 0.6 * font_px * (double)text_chars(s); }

// At most `chars` code points, with an ellipsis when cut.
std::string truncate_text(const std::string& s, size_t chars) {
  if (text_chars(s) <= chars || chars < 2) return s;
  size_t n = 0, i = 0;
  for (; i < s.size(); i++) {
    if (((unsigned char)s[i] & 0xC0) != 0x80 && n++ == chars - 1) break;
  }
  return s.substr(0, i) + "\xE2\x80\xA6";
}

std::string label_in(double v, double step, bool exp_form) {
  char buf[64];
  if (!std::isfinite(v)) return v != v ? "nan" : v > 0 ? "inf" : "-inf";
  if (!(std::fabs(step) > 0) || !std::isfinite(step)) step = v != 0 ? v : 1;
  if (v == 0 || std::fabs(v) < std::fabs(step) * 1e-9) return "0";
  const int sexp = (int)std::floor(std::log10(std::fabs(step)) + 1e-9);
  if (exp_form) {
    const int vexp = (int)std::floor(std::log10(std::fabs(v)) + 1e-9);
    std::snprintf(buf, sizeof buf, "%.*e", std::max(0, std::min(15, vexp - sexp)), v);
    std::string s = buf;  // "1.5e+06" -> "1.5e6", "2e-05" -> "2e-5"
    size_t e = s.find('e');
    std::string mant = s.substr(0, e), ex = s.substr(e + 1);
    bool neg = ex[0] == '-';
    ex = ex.substr(1);
    while (ex.size() > 1 && ex[0] == '0') ex.erase(0, 1);
    return mant + "e" + (neg ? "-" : "") + ex;
  }
  int d = std::max(0, -sexp);  // enough decimals to write the step exactly (0.25 needs 2)
  while (d < 12 && std::fabs(std::round(step * std::pow(10.0, d)) - step * std::pow(10.0, d)) > 1e-6) d++;
  std::snprintf(buf, sizeof buf, "%.*f", d, v);
  return buf;
}

bool wants_exp_form(double max_abs) { return max_abs >= 1e6 || (max_abs > 0 && max_abs < 1e-3); }

// One axis, planned: its range, ticks and their labels.
struct AxisPlan {
  double lo = 0, hi = 1;
  bool log = false;
  std::vector<double> ticks;
  std::vector<std::string> labels;
};

// values: the finite values this axis shows (> 0 on a log axis).
AxisPlan plan_axis(const Axis& a, const std::vector<double>& values, const std::string& chart) {
  AxisPlan p;
  p.log = a.log;
  const bool has_min = std::isfinite(a.min), has_max = std::isfinite(a.max);
  NALA_CHECK(!(has_min && has_max) || a.min < a.max, "plot '", chart, "': axis '", a.label, "' has min ", a.min,
             " >= max ", a.max);
  NALA_CHECK(!a.log || ((!has_min || a.min > 0) && (!has_max || a.max > 0)), "plot '", chart, "': log axis '",
             a.label, "' needs a positive range, got [", a.min, ", ", a.max, "]");
  double lo, hi;
  if (values.empty()) {
    lo = a.log ? 1 : 0, hi = a.log ? 10 : 1;
  } else {
    lo = *std::min_element(values.begin(), values.end());
    hi = *std::max_element(values.begin(), values.end());
  }
  if (has_min) lo = a.min, hi = std::max(hi, lo);
  if (has_max) hi = a.max, lo = std::min(lo, hi);
  std::vector<double> t = a.log ? log_ticks(lo, hi) : nice_ticks(lo, hi);
  p.lo = has_min ? a.min : std::min(lo, t.front());
  p.hi = has_max ? a.max : std::max(hi, t.back());
  const double eps = (p.hi - p.lo) * 1e-9;
  for (double v : t)
    if (v >= p.lo - eps && v <= p.hi + eps) p.ticks.push_back(v);
  double max_abs = 0;
  for (double v : p.ticks) max_abs = std::max(max_abs, std::fabs(v));
  const bool exp_form = wants_exp_form(max_abs);
  const double step = p.ticks.size() > 1 ? p.ticks[1] - p.ticks[0] : (p.hi - p.lo);
  for (double v : p.ticks) p.labels.push_back(a.log ? tick_label(v, v) : label_in(v, step, exp_form));
  return p;
}

struct Scale {
  double lo, hi, p0, p1;
  bool log;
  double map(double v) const {
    double t = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : (v - lo) / (hi - lo);
    return p0 + t * (p1 - p0);
  }
};

// Liang-Barsky: clips the segment a-b to the box; false when nothing is left.
bool clip_segment(double& ax, double& ay, double& bx, double& by, double x0, double y0, double x1, double y1) {
  double t0 = 0, t1 = 1, dx = bx - ax, dy = by - ay;
  const double p[4] = {-dx, dx, -dy, dy}, q[4] = {ax - x0, x1 - ax, ay - y0, y1 - ay};
  for (int i = 0; i < 4; i++) {
    if (p[i] == 0) {
      if (q[i] < 0) return false;
      continue;
    }
    double r = q[i] / p[i];
    if (p[i] < 0) t0 = std::max(t0, r);
    else t1 = std::min(t1, r);
    if (t0 > t1) return false;
  }
  if (t1 < 1) bx = ax + t1 * dx, by = ay + t1 * dy;  // (an unclipped end keeps its exact value)
  if (t0 > 0) ax += t0 * dx, ay += t0 * dy;
  return true;
}

// A point more than kFar pixels away is first moved along its segment to that
// distance, computed from the near end: clipping from a point at 1e300 would
// lose the visible end to rounding. (Two far points are clipped as they are.)
constexpr double kFar = 1e7;
bool far(double x, double y) { return std::fabs(x) > kFar || std::fabs(y) > kFar; }
void pull_in(double nx, double ny, double& fx, double& fy) {
  for (int pass = 0; pass < 2; pass++) {
    if (std::fabs(fx) > kFar) {
      const double to = fx > 0 ? kFar : -kFar, s = (to - nx) / (fx - nx);
      fy = ny + (fy - ny) * s, fx = to;
    }
    if (std::fabs(fy) > kFar) {
      const double to = fy > 0 ? kFar : -kFar, s = (to - ny) / (fy - ny);
      fx = nx + (fx - nx) * s, fy = to;
    }
  }
}

// What a series shows: the points drawable on this chart's axes.
struct Prepared {
  const Series* s;
  std::string color;
  std::vector<char> ok;        // per point
  int64_t shown = 0, nonfinite = 0, nonpositive = 0;
};

std::vector<Prepared> prepare(const Chart& c) {
  std::vector<Prepared> out;
  size_t palette = 0;
  for (const Series& s : c.series) {
    NALA_CHECK(s.x.size() == s.y.size(), "plot '", c.title, "': series '", s.name, "' has ", s.x.size(),
               " x values and ", s.y.size(), " y values");
    NALA_CHECK(s.color.empty() || valid_color(s.color), "plot '", c.title, "': series '", s.name, "' has colour '",
               s.color, "' (want #rgb or #rrggbb)");
    Prepared p;
    p.s = &s;
    p.color = s.color.empty() ? palette_color(palette++) : s.color;
    const bool ylog = s.right_axis ? c.y2.log : c.y.log;
    p.ok.resize(s.x.size());
    for (size_t i = 0; i < s.x.size(); i++) {
      double x = s.x[i], y = s.y[i];
      if (!std::isfinite(x) || !std::isfinite(y)) p.nonfinite++;
      else if ((c.x.log && x <= 0) || (ylog && y <= 0)) p.nonpositive++;
      else p.ok[i] = 1, p.shown++;
    }
    out.push_back(std::move(p));
  }
  return out;
}

std::string plural(int64_t n, const char* what) { return std::to_string(n) + " " + what + (n == 1 ? "" : "s"); }

void text(std::string& o, double x, double y, const std::string& s, const std::string& attrs) {
  o += "<text x=\"" + num(x, 1) + "\" y=\"" + num(y, 1) + "\" " + attrs + ">" + xml_escape(s) + "</text>\n";
}
void line(std::string& o, double x1, double y1, double x2, double y2, const std::string& attrs = "") {
  o += "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" + num(y2) + "\"" +
       (attrs.empty() ? "" : " " + attrs) + "/>\n";
}
void rect(std::string& o, double x0, double y0, double x1, double y1, const std::string& attrs) {
  o += "<rect x=\"" + num(x0) + "\" y=\"" + num(y0) + "\" width=\"" + num(x1 - x0) + "\" height=\"" + num(y1 - y0) +
       "\" " + attrs + "/>\n";
}
void circle(std::string& o, double x, double y, const std::string& r, int decimals, const std::string& attrs = "") {
  o += "<circle cx=\"" + num(x, decimals) + "\" cy=\"" + num(y, decimals) + "\" r=\"" + r + "\"" +
       (attrs.empty() ? "" : " " + attrs) + "/>\n";
}
double widest(const std::vector<std::string>& v, double font_px) {
  double w = 0;
  for (auto& s : v) w = std::max(w, text_width(s, font_px));
  return w;
}

// The plot area (pixels) and the scales onto it.
struct Area {
  double x0, y0, x1, y1;
  Scale sx, sy, sy2;
  bool inside(double x, double y) const { return x >= x0 - 0.01 && x <= x1 + 0.01 && y >= y0 - 0.01 && y <= y1 + 0.01; }
};

// One series: a polyline broken at skipped points, with dots on a short
// series and on points left alone between skipped ones; or a dot per point.
void draw_series(std::string& o, const Chart& c, const Prepared& p, const Area& a) {
  const Scale& sy = p.s->right_axis ? a.sy2 : a.sy;
  const Series& s = *p.s;
  auto at = [&](size_t i, double* X, double* Y) {
    *X = a.sx.map(s.x[i]), *Y = sy.map(s.y[i]);
    return p.ok[i] && std::isfinite(*X) && std::isfinite(*Y);
  };
  if (c.mark == Mark::Points) {
    o += "<g class=\"points\" fill=\"" + p.color + "\" fill-opacity=\"" + num(c.point_opacity) + "\">\n";
    const std::string r = num(c.point_radius, 1);
    for (size_t i = 0; i < s.x.size(); i++) {
      double X, Y;
      if (at(i, &X, &Y) && a.inside(X, Y)) circle(o, X, Y, r, 1);
    }
    o += "</g>\n";
    return;
  }
  const bool all_dots = p.shown <= kMarkAllBelow;
  // A long series (a metrics.csv of a million steps) is thinned before it is
  // drawn: of an unbroken stretch of points in one pixel column only the
  // first, the lowest, the highest and the last change the picture, so the
  // SVG stays small however many points there are. Breaks are kept.
  std::vector<size_t> keep;
  for (size_t i = 0; i < s.x.size();) {
    double X, Y;
    if (s.x.size() <= kThinAbove || !at(i, &X, &Y)) {
      keep.push_back(i++);
      continue;
    }
    const size_t first = i;
    const double column = std::floor(X);
    size_t lo = i, hi = i, last = i;
    double ylo = Y, yhi = Y;
    for (i++; i < s.x.size() && at(i, &X, &Y) && std::floor(X) == column; i++) {
      if (Y < ylo) ylo = Y, lo = i;
      if (Y > yhi) yhi = Y, hi = i;
      last = i;
    }
    for (size_t k : {first, std::min(lo, hi), std::max(lo, hi), last})
      if (keep.empty() || keep.back() < k) keep.push_back(k);
  }
  std::vector<std::pair<double, double>> dots;
  std::string d;
  double penx = NAN, peny = NAN, prevx = 0, prevy = 0;
  size_t run = 0;  // points in the current unbroken stretch
  for (size_t j = 0; j <= keep.size(); j++) {
    const size_t i = j < keep.size() ? keep[j] : s.x.size();
    double X = 0, Y = 0;
    if (i == s.x.size() || !at(i, &X, &Y)) {
      if (run == 1 && !all_dots) dots.push_back({prevx, prevy});  // a point alone
      run = 0;
      continue;
    }
    if (run > 0) {
      double ax = prevx, ay = prevy, bx = X, by = Y;
      if (far(ax, ay) && !far(bx, by)) pull_in(bx, by, ax, ay);
      if (far(bx, by) && !far(ax, ay)) pull_in(ax, ay, bx, by);
      if (clip_segment(ax, ay, bx, by, a.x0, a.y0, a.x1, a.y1)) {
        if (!(std::fabs(ax - penx) < 1e-6 && std::fabs(ay - peny) < 1e-6)) d += "M" + num(ax) + " " + num(ay);
        d += "L" + num(bx) + " " + num(by);
        penx = bx, peny = by;
      }
    }
    run++, prevx = X, prevy = Y;
    if (all_dots) dots.push_back({X, Y});
  }
  if (!d.empty())
    o += "<path class=\"series\" d=\"" + d + "\" fill=\"none\" stroke=\"" + p.color +
         "\" stroke-width=\"2\" stroke-linejoin=\"round\" stroke-linecap=\"round\"" +
         (s.dashed ? " stroke-dasharray=\"6 4\"" : "") + "/>\n";
  if (!dots.empty()) {
    o += "<g class=\"markers\" fill=\"" + p.color + "\">\n";
    for (auto& [X, Y] : dots)
      if (a.inside(X, Y)) circle(o, X, Y, "3", 2);
    o += "</g>\n";
  }
}

// Tick marks and labels of the three axes.
void draw_ticks(std::string& o, const Area& a, const AxisPlan& xp, const AxisPlan& yp, const AxisPlan* y2p) {
  o += "<g stroke=\"#444444\" stroke-width=\"1\">\n";
  for (double t : xp.ticks) line(o, a.sx.map(t), a.y1, a.sx.map(t), a.y1 + 5);
  for (double t : yp.ticks) line(o, a.x0 - 5, a.sy.map(t), a.x0, a.sy.map(t));
  if (y2p)
    for (double t : y2p->ticks) line(o, a.x1, a.sy2.map(t), a.x1 + 5, a.sy2.map(t));
  o += "</g>\n";
  // x labels: every k-th when they would overlap.
  const double label_w = widest(xp.labels, 11) + 8;
  size_t every = 1;
  while (every < xp.ticks.size() && label_w * (double)xp.ticks.size() / (double)every > (a.x1 - a.x0) * 1.1) every++;
  for (size_t i = 0; i < xp.ticks.size(); i += every)
    text(o, a.sx.map(xp.ticks[i]), a.y1 + 18, xp.labels[i], "font-size=\"11\" text-anchor=\"middle\"");
  for (size_t i = 0; i < yp.ticks.size(); i++)
    text(o, a.x0 - 8, a.sy.map(yp.ticks[i]) + 4, yp.labels[i], "font-size=\"11\" text-anchor=\"end\"");
  if (y2p)
    for (size_t i = 0; i < y2p->ticks.size(); i++)
      text(o, a.x1 + 8, a.sy2.map(y2p->ticks[i]) + 4, y2p->labels[i], "font-size=\"11\" text-anchor=\"start\"");
}

// A rotated axis label centred on (x, y).
void vertical_label(std::string& o, double x, double y, const std::string& s, int degrees) {
  text(o, x, y, s, "font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(" + std::to_string(degrees) + " " +
                       num(x) + " " + num(y) + ")\"");
}

// Draws one chart into the box (ox, oy, W, H) of the image.
void render(std::string& o, const Chart& c, double ox, double oy, double W, double H) {
  const std::vector<Prepared> prep = prepare(c);
  std::vector<double> xs, ys, y2s;
  bool any_right = false, any_shown = false;
  for (const Prepared& p : prep) {
    any_right |= p.s->right_axis;
    any_shown |= p.shown > 0;
    for (size_t i = 0; i < p.ok.size(); i++) {
      if (!p.ok[i]) continue;
      xs.push_back(p.s->x[i]);
      (p.s->right_axis ? y2s : ys).push_back(p.s->y[i]);
    }
  }
  const AxisPlan xp = plan_axis(c.x, xs, c.title), yp = plan_axis(c.y, ys, c.title);
  const AxisPlan y2p = any_right ? plan_axis(c.y2, y2s, c.title) : AxisPlan();

  std::vector<std::string> notes;
  for (const Prepared& p : prep) {
    const std::string who = p.s->name.empty() ? "(unnamed series)" : p.s->name;
    if (p.nonfinite) notes.push_back(who + ": " + plural(p.nonfinite, "point") + " not shown (NaN or infinite)");
    if (p.nonpositive) notes.push_back(who + ": " + plural(p.nonpositive, "point") + " not shown (<= 0 on a log axis)");
  }
  notes.insert(notes.end(), c.notes.begin(), c.notes.end());
  const size_t max_notes = std::max<size_t>(c.max_notes, 1);
  if (notes.size() > max_notes) {
    const size_t more = notes.size() - (max_notes - 1);
    notes.resize(max_notes - 1);
    notes.push_back("... and " + plural((int64_t)more, "more note"));
  }

  std::vector<const Prepared*> legend;
  if (c.legend)
    for (const Prepared& p : prep)
      if (p.s->in_legend && !(p.s->legend.empty() ? p.s->name : p.s->legend).empty()) legend.push_back(&p);
  const size_t legend_chars = (size_t)std::max(4.0, (W * 0.3 - 30) / 7.2);
  auto legend_text = [&](const Prepared& p) {
    std::string t = p.s->legend.empty() ? p.s->name : p.s->legend;
    if (any_right) t += p.s->right_axis ? " (right)" : " (left)";
    if (p.shown == 0) t += " (no data)";
    return truncate_text(t, legend_chars);
  };
  double legend_w = 0;
  for (const Prepared* p : legend) legend_w = std::max(legend_w, 30 + text_width(legend_text(*p), 12));

  // Margins, from what has to fit around the plot area.
  const double y2_w = any_right ? widest(y2p.labels, 11) + 10 + (c.y2.label.empty() ? 0 : 20) : 0;
  const double top = 10 + (c.title.empty() ? 0 : 22) + (c.subtitle.empty() ? 0 : 18) + 10;
  const double left = 10 + (c.y.label.empty() ? 0 : 20) + widest(yp.labels, 11) + 10;
  const double right = 15 + y2_w + (legend.empty() ? 0 : legend_w + 10);
  const double bottom = 8 + 18 + (c.x.label.empty() ? 0 : 20) + 15.0 * (double)notes.size() + 6;
  Area a;
  a.x0 = ox + left, a.x1 = std::max(a.x0 + 10, ox + W - right);
  a.y0 = oy + top, a.y1 = std::max(a.y0 + 10, oy + H - bottom);
  a.sx = {xp.lo, xp.hi, a.x0, a.x1, xp.log};
  a.sy = {yp.lo, yp.hi, a.y1, a.y0, yp.log};
  a.sy2 = {y2p.lo, y2p.hi, a.y1, a.y0, y2p.log};

  if (!c.title.empty())
    text(o, ox + W / 2, oy + 26, c.title, "font-size=\"16\" font-weight=\"bold\" text-anchor=\"middle\"");
  if (!c.subtitle.empty())
    text(o, ox + W / 2, oy + 26 + (c.title.empty() ? 0 : 18), c.subtitle,
         "font-size=\"12\" fill=\"#555555\" text-anchor=\"middle\"");
  rect(o, a.x0, a.y0, a.x1, a.y1, "fill=\"#ffffff\" stroke=\"none\"");
  if (c.grid) {
    o += "<g stroke=\"#e3e3e3\" stroke-width=\"1\">\n";
    for (double t : xp.ticks) line(o, a.sx.map(t), a.y0, a.sx.map(t), a.y1);
    for (double t : yp.ticks) line(o, a.x0, a.sy.map(t), a.x1, a.sy.map(t));
    o += "</g>\n";
  }
  for (const Prepared& p : prep) draw_series(o, c, p, a);
  if (!any_shown)
    text(o, (a.x0 + a.x1) / 2, (a.y0 + a.y1) / 2, "no data",
         "font-size=\"14\" fill=\"#888888\" text-anchor=\"middle\"");
  rect(o, a.x0, a.y0, a.x1, a.y1, "fill=\"none\" stroke=\"#444444\" stroke-width=\"1\"");
  draw_ticks(o, a, xp, yp, any_right ? &y2p : nullptr);
  if (!c.x.label.empty()) text(o, (a.x0 + a.x1) / 2, a.y1 + 38, c.x.label, "font-size=\"12\" text-anchor=\"middle\"");
  if (!c.y.label.empty()) vertical_label(o, ox + 22, (a.y0 + a.y1) / 2, c.y.label, -90);
  if (any_right && !c.y2.label.empty())
    vertical_label(o, a.x1 + y2_w - 4, (a.y0 + a.y1) / 2, c.y2.label, 90);

  // Legend, right of the plot area (and of the second axis).
  const double lx = a.x1 + 15 + y2_w;
  const size_t fits = (size_t)std::max(1.0, (a.y1 - a.y0) / 18);
  for (size_t i = 0; i < legend.size(); i++) {
    const double ly = a.y0 + 10 + 18.0 * (double)i;
    if (i + 1 == fits && legend.size() > fits) {
      text(o, lx, ly + 4, "... " + plural((int64_t)(legend.size() - i), "more series"),
           "font-size=\"12\" fill=\"#555555\"");
      break;
    }
    const Prepared& p = *legend[i];
    if (c.mark == Mark::Line)
      line(o, lx, ly, lx + 22, ly,
           "stroke=\"" + p.color + "\" stroke-width=\"2\"" + (p.s->dashed ? " stroke-dasharray=\"6 4\"" : ""));
    else
      circle(o, lx + 11, ly, "4", 2, "fill=\"" + p.color + "\"");
    text(o, lx + 28, ly + 4, legend_text(p), "font-size=\"12\"");
  }

  // Notes, under the x label.
  for (size_t i = 0; i < notes.size(); i++)
    text(o, ox + 10, a.y1 + (c.x.label.empty() ? 38 : 58) + 15.0 * (double)i, notes[i],
         "font-size=\"11\" fill=\"#a33a3a\"");
}

std::string open_svg(double W, double H) {
  return std::string(kSvgMarker) + "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(W, 0) + "\" height=\"" +
         num(H, 0) + "\" viewBox=\"0 0 " + num(W, 0) + " " + num(H, 0) +
         "\" font-family=\"sans-serif\" fill=\"#222222\">\n<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
}

void check_size(double W, double H, const std::string& title) {
  NALA_CHECK(std::isfinite(W) && std::isfinite(H) && W >= 50 && H >= 50 && W <= 20000 && H <= 20000, "plot '",
             title, "': size ", W, " x ", H, " pixels (want 50..20000 each)");
}

}  // namespace

const char* palette_color(size_t i) { return kPalette[i % (sizeof kPalette / sizeof *kPalette)]; }

std::vector<double> nice_ticks(double lo, double hi, int target) {
  NALA_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "nice_ticks: range [", lo, ", ", hi, "]");
  if (hi - lo <= 1e-12 * std::max(std::fabs(lo), std::fabs(hi))) {  // one value: a range around it
    const double pad = lo != 0 ? std::fabs(lo) * 0.1 : 1;
    lo -= pad, hi += pad;
  }
  const double span = hi - lo;
  if (!std::isfinite(span)) return {lo, hi};  // beyond double's range: the ends only
  target = std::max(target, 2);
  const double raw = span / (target - 1), mag = std::pow(10.0, std::floor(std::log10(raw))), f = raw / mag;
  const double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  const double k0 = std::floor(lo / step + 1e-9), k1 = std::ceil(hi / step - 1e-9);
  std::vector<double> t;
  for (double k = k0; k <= k1 && t.size() < 100; k++) t.push_back(k * step == 0 ? 0.0 : k * step);
  return t;
}

std::vector<double> log_ticks(double lo, double hi) {
  NALA_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo > 0 && lo <= hi, "log_ticks: range [", lo, ", ", hi, "]");
  if (hi <= lo * (1 + 1e-12)) lo /= 3, hi *= 3;  // one value: a range around it
  const int e0 = (int)std::floor(std::log10(lo) + 1e-9), e1 = std::max(e0 + 1, (int)std::ceil(std::log10(hi) - 1e-9));
  std::vector<double> t;
  if (e1 - e0 <= 2) {  // 1, 2, 5 per decade; from the last <= lo to the first >= hi
    std::vector<double> all;
    for (int e = e0; e <= e1; e++)
      for (double m : {1.0, 2.0, 5.0})
        if (e < e1 || m == 1.0) all.push_back(m * std::pow(10.0, e));
    size_t a = 0, b = all.size() - 1;
    while (a + 1 < all.size() && all[a + 1] <= lo * (1 + 1e-12)) a++;
    while (b > 0 && all[b - 1] >= hi * (1 - 1e-12)) b--;
    return std::vector<double>(all.begin() + (ptrdiff_t)a, all.begin() + (ptrdiff_t)b + 1);
  }
  const int every = (e1 - e0 + 7) / 8;  // at most about 9 labelled decades
  int e = e0;
  for (; e < e1; e += every) t.push_back(std::pow(10.0, e));
  t.push_back(std::pow(10.0, e));  // the first power >= hi
  return t;
}

std::string tick_label(double v, double step) { return label_in(v, step, wants_exp_form(std::fabs(v))); }

std::string xml_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = (unsigned char)s[i];
    if (c < 0x80) {
      switch (c) {
        case '&': o += "&amp;"; break;
        case '<': o += "&lt;"; break;
        case '>': o += "&gt;"; break;
        case '"': o += "&quot;"; break;
        case '\'': o += "&#39;"; break;
        default: o += (c < 0x20 || c == 0x7F) ? ' ' : (char)c;
      }
      i++;
      continue;
    }
    // A UTF-8 sequence: its length, its code point, and the rules (no
    // overlong form, no surrogate, at most U+10FFFF, not U+FFFE/U+FFFF).
    const int len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
    bool ok = len > 0 && c < 0xF5 && i + (size_t)len <= s.size();
    uint32_t cp = len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (int k = 1; ok && k < len; k++) {
      const unsigned char cc = (unsigned char)s[i + k];
      ok = (cc & 0xC0) == 0x80;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (ok) ok = !(len == 3 && cp < 0x800) && !(len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) &&
                 !(cp >= 0xD800 && cp <= 0xDFFF) && cp != 0xFFFE && cp != 0xFFFF;
    if (ok) {
      o.append(s, i, (size_t)len);
      i += (size_t)len;
    } else {
      o += kReplacement;
      i++;
    }
  }
  return o;
}

std::string chart_svg(const Chart& chart) {
  check_size(chart.width, chart.height, chart.title);
  std::string o = open_svg(chart.width, chart.height);
  render(o, chart, 0, 0, chart.width, chart.height);
  return o + "</svg>\n";
}

std::string panels_svg(const Panels& panels) {
  NALA_CHECK(panels.columns >= 1, "plot '", panels.title, "': ", panels.columns, " columns");
  const int n = (int)panels.charts.size(), cols = std::max(1, std::min(panels.columns, n));
  const int rows = (n + cols - 1) / cols;
  const double head = panels.title.empty() ? 0 : 36;
  const double W = panels.panel_width * cols, H = head + panels.panel_height * std::max(rows, 1);
  check_size(W, H, panels.title);
  std::vector<Chart> charts = panels.charts;
  bool same_log = true;
  for (const Chart& c : charts) same_log &= c.x.log == charts.front().x.log;
  if (panels.shared_x && n > 1 && same_log) {  // one x axis plan for all, given as each panel's fixed range
    std::vector<double> xs;
    for (const Chart& c : charts)
      for (const Prepared& p : prepare(c))
        for (size_t i = 0; i < p.ok.size(); i++)
          if (p.ok[i]) xs.push_back(p.s->x[i]);
    Axis shared = charts.front().x;
    shared.min = shared.max = NAN;
    for (const Chart& c : charts) {  // fixed ends of any panel widen the shared range
      if (std::isfinite(c.x.min)) xs.push_back(c.x.min);
      if (std::isfinite(c.x.max)) xs.push_back(c.x.max);
    }
    const AxisPlan xp = plan_axis(shared, xs, panels.title);
    for (Chart& c : charts) c.x.min = xp.lo, c.x.max = xp.hi;
  }
  std::string o = open_svg(W, H);
  if (!panels.title.empty())
    text(o, W / 2, 26, panels.title, "font-size=\"18\" font-weight=\"bold\" text-anchor=\"middle\"");
  for (int i = 0; i < n; i++) {
    const double ox = panels.panel_width * (i % cols), oy = head + panels.panel_height * (i / cols);
    o += "<g class=\"panel\">\n";
    render(o, charts[(size_t)i], ox, oy, panels.panel_width, panels.panel_height);
    o += "</g>\n";
  }
  return o + "</svg>\n";
}

void write_svg(const std::string& path, const std::string& svg) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    // Only a plot nala wrote is replaced. (Anything that is not a regular file
    // is refused by write_file_atomic below, with its own message.)
    InputFile f(path, "plot");
    const size_t n = std::strlen(kSvgMarker);
    std::string head((size_t)std::min<int64_t>(f.size(), (int64_t)n), '\0');
    if (!head.empty()) f.read(&head[0], head.size());
    NALA_CHECK(head == kSvgMarker, path, ": a file that nala did not write is already there (it does not begin ",
               "with nala's SVG header); it is left as it is. Remove it, or write the plots to another folder");
  }
  write_file_atomic(path, svg, "plot");
}

}  // namespace plot
}  // namespace nala
