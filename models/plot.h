// models/plot.h - charts as SVG text, written by nala itself: line charts
// (several series on one x axis, an optional second y axis), scatter plots of
// thousands of points, and small multiples (a grid of such charts). SVG is
// text any browser or image viewer opens; nothing here needs Python, a font
// file or an image library.
//
// Every chart has axes with ticks at nice numbers (1, 2 or 5 times a power of
// ten) that cover the data, tick labels, axis labels, a title, a legend and a
// grid; either axis may be logarithmic. What cannot be drawn is said, never
// hidden: a point whose x or y is NaN or infinite (or <= 0 on a log axis) is
// skipped, a line is broken there, and a note under the chart counts the
// skipped points of each series. An empty series appears in the legend as
// "(no data)"; a chart with no point at all says "no data". A single point or
// a constant series gets a range around its value and a marker. A line of
// more than 4096 points is thinned to at most four per pixel column (first,
// lowest, highest, last of each unbroken stretch): the same picture, a
// bounded file.
//
// The text is UTF-8 XML: names and labels are escaped, control characters and
// invalid UTF-8 bytes replaced, the font is the generic "sans-serif". It begins
// with kSvgMarker, which write_svg uses to tell its own files from others.
//
// What it does not do: interactive charts, raster output (PNG), text metrics
// (label widths are estimated from character counts).
// Part of the core library (C++ standard library only, and nn/files.h).
#pragma once
#include <cmath>
#include <string>
#include <vector>

namespace nala {
namespace plot {

struct Series {
  std::string name;          // legend text and the series' name in notes; empty: left out of the legend
  std::string legend;        // the legend's text when it differs from name (several series, one entry)
  bool in_legend = true;     // false: no legend entry (another series stands for it)
  std::vector<double> x, y;  // the same length (checked)
  std::string color;         // "#rgb" or "#rrggbb"; empty: the next palette colour
  bool right_axis = false;   // line charts: drawn against the second y axis (Chart::y2)
  bool dashed = false;
};

struct Axis {
  std::string label;
  bool log = false;  // log10 scale: ticks at powers of ten (and 2x, 5x over few decades)
  // A fixed range; NaN (the default): the data's range widened to the
  // enclosing ticks. Points outside a fixed range are clipped, not counted.
  double min = NAN, max = NAN;
};

enum class Mark { Line, Points };  // Line: a polyline per series; Points: a dot per point (scatter)

struct Chart {
  std::string title, subtitle;
  Axis x, y, y2;                    // y2 appears when a series has right_axis
  std::vector<Series> series;
  std::vector<std::string> notes;   // extra lines under the chart (after the skipped-point notes)
  size_t max_notes = 6;             // more notes than this: the last line says how many are left out
  Mark mark = Mark::Line;
  double point_radius = 2.0, point_opacity = 0.5;  // Mark::Points
  bool grid = true, legend = true;
  double width = 760, height = 460;  // pixels (the whole image, or one panel)
};

// Several charts on a grid, read left to right, top to bottom. shared_x: one
// x range (and ticks) for every panel, so they line up.
struct Panels {
  std::string title;
  std::vector<Chart> charts;  // each chart's width and height are ignored: the panel size is
  int columns = 2;
  double panel_width = 400, panel_height = 300;
  bool shared_x = true;
};

// The colour a series without one gets, the i-th (cycling through ten).
const char* palette_color(size_t i);

// The first bytes of every SVG written here (the XML declaration and a comment).
extern const char* const kSvgMarker;

std::string chart_svg(const Chart& chart);
std::string panels_svg(const Panels& panels);

// Writes svg to path through nn/files.h's write_file_atomic (a symlink,
// device or FIFO at the path is refused). An existing file is replaced only
// when it begins with kSvgMarker, i.e. nala wrote it: any other file there is
// an error naming it, and is left as it was.
void write_svg(const std::string& path, const std::string& svg);

// Ticks for [lo, hi] (lo <= hi, both finite): about `target` values k * step,
// step 1, 2 or 5 times a power of ten, the first <= lo and the last >= hi.
// lo == hi gets a range around the value.
std::vector<double> nice_ticks(double lo, double hi, int target = 6);
// Ticks for a log axis over [lo, hi] (0 < lo <= hi): powers of ten (every
// k-th over many decades), with 2x and 5x added over two decades or fewer;
// the first <= lo and the last >= hi.
std::vector<double> log_ticks(double lo, double hi);
// A tick label: as few digits as `step` needs ("0.25", "1500", "2e-05" -> "2e-5").
std::string tick_label(double v, double step);
// Text for XML: & < > " ' escaped, control characters and invalid UTF-8 replaced.
std::string xml_escape(const std::string& s);

}  // namespace plot
}  // namespace nala
