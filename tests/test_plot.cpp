// tests/test_plot.cpp - the SVG charts (models/plot.h), the training plots
// (models/train_plots.h) and `nala plot`: well-formed XML with escaped text,
// nice ticks that cover the data, NaN / infinite / non-positive points
// skipped and counted, the edge cases (empty series, one point, a constant),
// the file rule, and a render by a real SVG renderer (rsvg-convert, Debian's
// librsvg2-bin, installed by `tools/deps.sh build`) whose PNG must not be blank.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "models/plot.h"
#include "models/train_plots.h"
#include "stb/stb_image.h"
#include "stb/stb_image_write.h"
#include "tests/helpers.h"
#include "tests/process.h"
#include "tools/common.h"

using namespace nala;
using namespace nala::test;
namespace fs = std::filesystem;

namespace {

void put(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// ---- a small XML well-formedness check ----------------------------------
// Enough of XML 1.0 for what nala writes: an optional declaration, comments,
// elements with quoted attributes, text; entity references must be the five
// predefined ones or numeric; tags must balance, one root element, valid
// UTF-8 without control characters. Collects every element's attributes.

struct Element {
  std::string name;
  std::map<std::string, std::string> attrs;
  std::string text;  // the text directly after the start tag (for <text>)
};

bool name_start(char c) { return std::isalpha((unsigned char)c) || c == '_' || c == ':'; }
bool name_char(char c) { return name_start(c) || std::isdigit((unsigned char)c) || c == '-' || c == '.'; }

// "" when `s` at i starts a valid entity reference (and advances i past it).
std::string entity(const std::string& s, size_t& i) {
  size_t semi = s.find(';', i);
  if (semi == std::string::npos || semi - i > 10) return "an '&' that starts no entity reference";
  std::string e = s.substr(i + 1, semi - i - 1);
  static const std::set<std::string> named = {"amp", "lt", "gt", "quot", "apos"};
  bool ok = named.count(e) > 0;
  if (!ok && e.size() >= 2 && e[0] == '#') {
    ok = true;
    for (size_t k = 1; k < e.size(); k++) ok &= std::isdigit((unsigned char)e[k]) != 0;
  }
  if (!ok) return "unknown entity '&" + e + ";'";
  i = semi + 1;
  return "";
}

std::string unescape(const std::string& s) {
  std::string o;
  static const std::map<std::string, std::string> named = {
      {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}, {"#39", "'"}};
  for (size_t i = 0; i < s.size(); i++) {
    size_t semi = s[i] == '&' ? s.find(';', i) : std::string::npos;
    if (semi != std::string::npos && named.count(s.substr(i + 1, semi - i - 1))) {
      o += named.at(s.substr(i + 1, semi - i - 1));
      i = semi;
    } else {
      o += s[i];
    }
  }
  return o;
}

std::string utf8_problem(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) {
      if (c < 0x20 && c != '\n' && c != '\t' && c != '\r') return "control character at byte " + std::to_string(i);
      i++;
      continue;
    }
    int len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
    if (!len || i + len > s.size()) return "invalid UTF-8 at byte " + std::to_string(i);
    for (int k = 1; k < len; k++)
      if (((unsigned char)s[i + k] & 0xC0) != 0x80) return "invalid UTF-8 at byte " + std::to_string(i);
    i += (size_t)len;
  }
  return "";
}

std::string xml_problem(const std::string& s, std::vector<Element>* elements = nullptr) {
  if (std::string u = utf8_problem(s); !u.empty()) return u;
  size_t i = 0;
  if (s.compare(0, 5, "<?xml") == 0) {
    i = s.find("?>");
    if (i == std::string::npos) return "unterminated XML declaration";
    i += 2;
  }
  std::vector<std::string> stack;
  int roots = 0;
  while (i < s.size()) {
    if (s.compare(i, 4, "<!--") == 0) {
      size_t end = s.find("-->", i + 4);
      if (end == std::string::npos) return "unterminated comment";
      if (s.substr(i + 4, end - i - 4).find("--") != std::string::npos) return "'--' inside a comment";
      i = end + 3;
      continue;
    }
    if (s[i] == '<' && i + 1 < s.size() && s[i + 1] == '/') {
      size_t j = i + 2;
      while (j < s.size() && name_char(s[j])) j++;
      std::string name = s.substr(i + 2, j - i - 2);
      while (j < s.size() && std::isspace((unsigned char)s[j])) j++;
      if (j >= s.size() || s[j] != '>') return "bad end tag </" + name;
      if (stack.empty() || stack.back() != name) return "end tag </" + name + "> does not match <" + (stack.empty() ? "" : stack.back()) + ">";
      stack.pop_back();
      i = j + 1;
      continue;
    }
    if (s[i] == '<') {
      size_t j = i + 1;
      if (j >= s.size() || !name_start(s[j])) return "bad tag at byte " + std::to_string(i);
      while (j < s.size() && name_char(s[j])) j++;
      Element el;
      el.name = s.substr(i + 1, j - i - 1);
      if (stack.empty() && roots++ > 0) return "a second root element <" + el.name + ">";
      for (;;) {
        size_t k = j;
        while (j < s.size() && std::isspace((unsigned char)s[j])) j++;
        if (j >= s.size()) return "unterminated tag <" + el.name;
        if (s[j] == '>' || s.compare(j, 2, "/>") == 0) break;
        if (j == k) return "no space before an attribute in <" + el.name + ">";
        size_t a = j;
        if (!name_start(s[j])) return "bad attribute name in <" + el.name + ">";
        while (j < s.size() && name_char(s[j])) j++;
        std::string an = s.substr(a, j - a);
        if (j >= s.size() || s[j] != '=') return "attribute " + an + " without '=' in <" + el.name + ">";
        j++;
        if (j >= s.size() || (s[j] != '"' && s[j] != '\'')) return "unquoted attribute " + an;
        char q = s[j++];
        std::string v;
        while (j < s.size() && s[j] != q) {
          if (s[j] == '<') return "'<' in attribute " + an + " of <" + el.name + ">";
          if (s[j] == '&') {
            if (std::string e = entity(s, j); !e.empty()) return e + " in attribute " + an;
            v += '&';
            continue;
          }
          v += s[j++];
        }
        if (j >= s.size()) return "unterminated attribute " + an;
        j++;
        if (el.attrs.count(an)) return "duplicate attribute " + an + " in <" + el.name + ">";
        el.attrs[an] = v;
      }
      bool empty = s[j] == '/';
      i = j + (empty ? 2 : 1);
      if (!empty) {
        stack.push_back(el.name);
        size_t lt = s.find('<', i);
        el.text = unescape(s.substr(i, lt == std::string::npos ? std::string::npos : lt - i));
      }
      if (elements) elements->push_back(std::move(el));
      continue;
    }
    // text
    if (s[i] == '&') {
      if (std::string e = entity(s, i); !e.empty()) return e;
      continue;
    }
    if (stack.empty() && !std::isspace((unsigned char)s[i])) return "text outside the root element";
    i++;
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  if (roots != 1) return "no root element";
  return "";
}

#define REQUIRE_WELL_FORMED(svg, elements)   \
  do {                                       \
    std::string _p = xml_problem(svg, elements); \
    INFO(_p);                                \
    REQUIRE(_p.empty());                     \
  } while (0)

std::vector<Element> with(const std::vector<Element>& els, const std::string& name, const std::string& attr = "",
                          const std::string& value = "") {
  std::vector<Element> out;
  for (auto& e : els)
    if (e.name == name && (attr.empty() || (e.attrs.count(attr) && e.attrs.at(attr) == value))) out.push_back(e);
  return out;
}

bool has_text(const std::vector<Element>& els, const std::string& needle) {
  for (auto& e : with(els, "text"))
    if (e.text.find(needle) != std::string::npos) return true;
  return false;
}

// The numbers of a path's d attribute, by command: "M x y L x y ...".
struct PathData {
  int moves = 0, lines = 0;
  std::vector<std::pair<double, double>> points;
};
PathData parse_path(const std::string& d) {
  PathData p;
  std::istringstream is(d);
  char cmd;
  double x, y;
  while (is >> cmd >> x >> y) {
    REQUIRE((cmd == 'M' || cmd == 'L'));
    (cmd == 'M' ? p.moves : p.lines)++;
    p.points.push_back({x, y});
  }
  return p;
}

double attr_num(const Element& e, const std::string& a) {
  REQUIRE(e.attrs.count(a));
  return std::stod(e.attrs.at(a));
}

// The plot area: the frame rectangle (fill none, dark stroke).
struct Box {
  double x0, y0, x1, y1;
  bool contains(double x, double y, double tol = 0.02) const {
    return x >= x0 - tol && x <= x1 + tol && y >= y0 - tol && y <= y1 + tol;
  }
};
Box frame_of(const std::vector<Element>& els) {
  auto frames = with(els, "rect", "fill", "none");
  REQUIRE(frames.size() == 1);
  const Element& r = frames[0];
  return {attr_num(r, "x"), attr_num(r, "y"), attr_num(r, "x") + attr_num(r, "width"),
          attr_num(r, "y") + attr_num(r, "height")};
}

// No attribute value may carry "nan" or "inf" (a number printed from a skipped point).
void require_finite_attributes(const std::vector<Element>& els) {
  for (auto& e : els)
    for (auto& [k, v] : e.attrs) {
      std::string low = v;
      for (char& c : low) c = (char)std::tolower((unsigned char)c);
      INFO("<" << e.name << " " << k << "=\"" << v << "\">");
      REQUIRE(low.find("nan") == std::string::npos);
      REQUIRE(low.find("inf") == std::string::npos);
    }
}

plot::Series series(const std::string& name, std::vector<double> x, std::vector<double> y) {
  plot::Series s;
  s.name = name, s.x = std::move(x), s.y = std::move(y);
  return s;
}

bool is_nice_step(double step) {
  const double e = std::floor(std::log10(step) + 1e-9), m = step / std::pow(10.0, e);
  return std::fabs(m - 1) < 1e-9 || std::fabs(m - 2) < 1e-9 || std::fabs(m - 5) < 1e-9;
}

// ---- the render check -----------------------------------------------------

// Full path of a program on PATH, or "" (no shell: the tests exec it directly).
std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string all = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  for (;;) {
    size_t colon = all.find(':', start);
    std::string dir = all.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (!dir.empty()) {
      std::string p = dir + "/" + name;
      struct stat st;
      if (::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0) return p;
    }
    if (colon == std::string::npos) return "";
    start = colon + 1;
  }
}

// What a rendered PNG holds, for deciding it is not blank.
struct PixelCount {
  int w = 0, h = 0;
  int64_t white = 0, colour = 0;  // near-white pixels; pixels within 40 per channel of the colour
  int colour_x0 = -1, colour_x1 = -1;  // the columns where the colour appears
};

PixelCount count_pixels(const std::string& png, const int rgb[3]) {
  int w = 0, h = 0, c = 0;
  unsigned char* px = stbi_load(png.c_str(), &w, &h, &c, 3);
  INFO(png << ": " << (px ? "" : stbi_failure_reason()));
  REQUIRE(px != nullptr);
  PixelCount r;
  r.w = w, r.h = h;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      const unsigned char* p = px + 3 * ((size_t)y * w + x);
      if (p[0] >= 245 && p[1] >= 245 && p[2] >= 245) r.white++;
      if (std::abs(p[0] - rgb[0]) <= 40 && std::abs(p[1] - rgb[1]) <= 40 && std::abs(p[2] - rgb[2]) <= 40) {
        r.colour++;
        r.colour_x0 = r.colour_x0 < 0 ? x : std::min(r.colour_x0, x);
        r.colour_x1 = std::max(r.colour_x1, x);
      }
    }
  stbi_image_free(px);
  return r;
}

// "" when the image looks like a chart drawn in `rgb`: mostly white
// background, the colour in at least min_pixels pixels, spread over at least
// half the width (a line or a cloud of points, not only a legend swatch).
std::string blank_problem(const PixelCount& p, int64_t min_pixels) {
  std::ostringstream os;
  const int64_t all = (int64_t)p.w * p.h;
  if (all == 0) return "an empty image";
  if (p.white < all / 2) os << "background: " << p.white << " of " << all << " pixels are white (want at least half); ";
  if (p.colour < min_pixels) os << "the series colour is in " << p.colour << " pixels (want " << min_pixels << "); ";
  else if (p.colour_x1 - p.colour_x0 < p.w / 2)
    os << "the series colour spans columns " << p.colour_x0 << ".." << p.colour_x1 << " of " << p.w << "; ";
  return os.str();
}

// Renders svg to png with rsvg-convert; a missing renderer fails the test.
void render(const std::string& svg, const std::string& png, const std::string& log) {
  const std::string bin = find_program("rsvg-convert");
  if (bin.empty())
    FAIL("rsvg-convert (Debian package librsvg2-bin) is not installed, so no plot can be rendered: "
         "run tools/deps.sh build");
  pid_t pid = spawn(bin, {"--format", "png", "--output", png, svg}, log);
  int status = 0;
  if (!wait_for(pid, 120, &status)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL("rsvg-convert did not finish within 120 s");
  }
  INFO(slurp(log));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

const char* kMetrics =
    "epoch,step,lr,train_loss,train_acc,test_loss,test_top1,test_top5,epoch_seconds,images_per_second\n"
    "1,10,0.001,2.0,0.40,1.5,0.50,0.90,1.0,100\n"
    "2,20,0.002,1.5,0.60,1.2,0.65,0.95,1.0,100\n"
    "3,30,0.0015,1.1,0.72,1.0,0.75,0.97,1.0,100\n"
    "4,40,0.001,0.9,0.80,0.95,0.78,0.98,1.0,100\n"
    "5,50,0.0005,0.8,0.85,0.97,0.77,0.99,1.0,100\n";

// `nala plot` with these arguments, in this process (a UsageError is thrown, not turned into exit code 2).
int run(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(&a[0]);
  argv.push_back(nullptr);
  return cmd_plot((int)args.size(), argv.data());
}

}  // namespace

TEST_CASE("plot: the XML check finds what it must", "[plot]") {
  REQUIRE(xml_problem("<?xml version=\"1.0\"?>\n<!-- c --><svg a=\"1\" b='&amp;&#39;'><g><text>x &lt; y</text></g><path/></svg>\n") == "");
  REQUIRE(xml_problem("<svg><g></svg>") != "");
  REQUIRE(xml_problem("<svg a=\"x<y\"/>") != "");
  REQUIRE(xml_problem("<svg>a & b</svg>") != "");
  REQUIRE(xml_problem("<svg>&nbsp;</svg>") != "");
  REQUIRE(xml_problem("<svg/><svg/>") != "");
  REQUIRE(xml_problem("<svg a=\"1\" a=\"2\"/>") != "");
  REQUIRE(xml_problem("<svg a=1/>") != "");
  REQUIRE(xml_problem("<svg><!-- a -- b --></svg>") != "");
  REQUIRE(xml_problem("<svg>\xC3</svg>") != "");
  REQUIRE(xml_problem("<svg>\x01</svg>") != "");
  REQUIRE(xml_problem("<svg>") != "");
}

TEST_CASE("plot: text is escaped, and bad bytes replaced, in every chart kind", "[plot]") {
  const std::string evil = "a<b & \"c\" 'd' > \x01\xFF\xC3(\xE2\x82\xAC)";
  REQUIRE(plot::xml_escape(evil) == "a&lt;b &amp; &quot;c&quot; &#39;d&#39; &gt;  \xEF\xBF\xBD\xEF\xBF\xBD(\xE2\x82\xAC)");
  REQUIRE(plot::xml_escape("\xED\xA0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
  REQUIRE(plot::xml_escape("\xC0\xAF") == "\xEF\xBF\xBD\xEF\xBF\xBD");              // an overlong '/'

  plot::Chart c;
  c.title = evil, c.subtitle = evil, c.x.label = evil, c.y.label = evil, c.y2.label = evil;
  c.series = {series(evil, {1, 2, 3}, {1, 4, 9})};
  c.series.push_back(series(evil + "2", {1, 2, 3}, {3, 2, 1}));
  c.series.back().right_axis = true;
  c.notes = {evil};
  for (plot::Mark m : {plot::Mark::Line, plot::Mark::Points}) {
    c.mark = m;
    std::vector<Element> els;
    const std::string svg = plot::chart_svg(c);
    REQUIRE(svg.compare(0, std::strlen(plot::kSvgMarker), plot::kSvgMarker) == 0);
    REQUIRE_WELL_FORMED(svg, &els);
    REQUIRE(els[0].name == "svg");
    REQUIRE(els[0].attrs.at("xmlns") == "http://www.w3.org/2000/svg");
    REQUIRE(els[0].attrs.at("font-family") == "sans-serif");
    REQUIRE(svg.find("a&lt;b &amp; &quot;c&quot;") != std::string::npos);
  }
  plot::Panels p;
  p.title = evil;
  p.charts = {c, c, c};
  REQUIRE_WELL_FORMED(plot::panels_svg(p), nullptr);
}

TEST_CASE("plot: ticks are nice numbers that cover the data", "[plot]") {
  Rng rng(7);
  for (int trial = 0; trial < 2000; trial++) {
    Tensor u = Tensor::empty({4});
    rng.fill_uniform(u, 0, 1);
    std::vector<float> r = u.to_vector();
    const double scale = std::pow(10.0, std::floor(r[0] * 16) - 8);  // 1e-8 .. 1e7
    double lo = (r[1] * 2 - 1) * scale, hi = lo + r[2] * scale * (r[3] < 0.1 ? 1e-3 : 5);
    if (trial % 50 == 0) hi = lo;  // a constant
    const std::vector<double> t = plot::nice_ticks(lo, hi, 6);
    INFO("range [" << lo << ", " << hi << "], " << t.size() << " ticks");
    REQUIRE(t.size() >= 3);
    REQUIRE(t.size() <= 12);
    // The step, snapped to the 1, 2 or 5 times a power of ten it must be.
    const double raw = (t.back() - t.front()) / (double)(t.size() - 1), e = std::pow(10.0, std::floor(std::log10(raw) + 1e-9));
    const double step = std::round(raw / e) * e;
    REQUIRE(std::fabs(raw - step) < 1e-6 * step);
    REQUIRE(is_nice_step(step));
    for (size_t i = 0; i < t.size(); i++) {
      const double k = t[i] / step;
      REQUIRE(std::fabs(k - std::round(k)) < 1e-6);                    // a multiple of the step
      if (i) REQUIRE(std::fabs(t[i] - t[i - 1] - step) < 1e-6 * step);  // evenly spaced
    }
    REQUIRE(t.front() <= lo + 1e-9 * step);
    REQUIRE(t.back() >= hi - 1e-9 * step);
    if (hi == lo) REQUIRE((t.front() < lo && t.back() > hi));
    else REQUIRE(t.back() - t.front() < 4 * (hi - lo) + 2 * step);  // not absurdly wide
  }
  REQUIRE(plot::nice_ticks(0, 1, 6) == std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1});
  REQUIRE(plot::nice_ticks(0, 100, 6) == std::vector<double>{0, 20, 40, 60, 80, 100});

  for (auto [lo, hi] : std::vector<std::pair<double, double>>{{3, 40}, {0.5, 0.5}, {10, 10}, {1e-5, 3}, {1e-30, 1e30}, {7, 7000}}) {
    const std::vector<double> t = plot::log_ticks(lo, hi);
    INFO("log range [" << lo << ", " << hi << "]");
    REQUIRE(t.size() >= 2);
    REQUIRE(t.front() <= lo * (1 + 1e-12));
    REQUIRE(t.back() >= hi * (1 - 1e-12));
    for (double v : t) REQUIRE(is_nice_step(v));  // 1, 2 or 5 times a power of ten
    for (size_t i = 1; i < t.size(); i++) REQUIRE(t[i] > t[i - 1]);
    REQUIRE(t.size() <= 12);
  }
  REQUIRE(plot::log_ticks(3, 40) == std::vector<double>{2, 5, 10, 20, 50});
  REQUIRE(plot::log_ticks(0.5, 0.5) == std::vector<double>{0.1, 0.2, 0.5, 1, 2});

  REQUIRE(plot::tick_label(0.30000000000000004, 0.1) == "0.3");
  REQUIRE(plot::tick_label(0.25, 0.25) == "0.25");
  REQUIRE(plot::tick_label(1500, 500) == "1500");
  REQUIRE(plot::tick_label(-1e-17, 0.1) == "0");
  REQUIRE(plot::tick_label(2e-5, 1e-5) == "2e-5");
  REQUIRE(plot::tick_label(1.5e6, 5e5) == "1.5e6");
  REQUIRE(plot::tick_label(0.002, 0) == "0.002");  // no step: the value's own digits
}

TEST_CASE("plot: every drawn point lies inside the plot area, the axis covers the data", "[plot]") {
  plot::Chart c;
  c.series = {series("a", {0.13, 1, 2, 3, 4.7}, {-3.2, 8, 0.001, 12.5, 1}), series("b", {1, 2}, {100, -50})};
  for (plot::Mark m : {plot::Mark::Line, plot::Mark::Points})
    for (bool ylog : {false, true}) {
      c.mark = m, c.y.log = ylog;
      std::vector<Element> els;
      REQUIRE_WELL_FORMED(plot::chart_svg(c), &els);
      require_finite_attributes(els);
      const Box box = frame_of(els);
      std::vector<std::pair<double, double>> pts;
      for (auto& e : with(els, "path", "class", "series"))
        for (auto& p : parse_path(e.attrs.at("d")).points) pts.push_back(p);
      for (auto& e : with(els, "circle")) {
        if (!e.attrs.count("r") || e.attrs.at("r") == "4") continue;  // a legend dot sits outside
        pts.push_back({attr_num(e, "cx"), attr_num(e, "cy")});
      }
      // log: the 2 non-positive values are skipped (and said so)
      REQUIRE(pts.size() >= (size_t)(ylog ? 5 : 7));
      for (auto& [x, y] : pts) {
        INFO("point (" << x << ", " << y << ") outside [" << box.x0 << ", " << box.x1 << "] x [" << box.y0 << ", " << box.y1 << "]");
        REQUIRE(box.contains(x, y));
      }
      // the extreme values reach the ends of the area: the range is not padded beyond the ticks
      double maxy = -1e300, miny = 1e300;
      for (auto& p : pts) maxy = std::max(maxy, p.second), miny = std::min(miny, p.second);
      REQUIRE(maxy - miny > 0.5 * (box.y1 - box.y0));
      if (ylog) REQUIRE(has_text(els, "a: 1 point not shown (<= 0 on a log axis)"));
      if (ylog) REQUIRE(has_text(els, "b: 1 point not shown (<= 0 on a log axis)"));
    }
}

TEST_CASE("plot: NaN and infinite points are skipped, the line broken there, and counted", "[plot]") {
  plot::Chart c;
  c.series = {series("s", {1, 2, 3, 4, 5, 6, 7}, {1, 2, NAN, 4, 5, INFINITY, 7})};
  std::vector<Element> els;
  REQUIRE_WELL_FORMED(plot::chart_svg(c), &els);
  require_finite_attributes(els);
  auto paths = with(els, "path", "class", "series");
  REQUIRE(paths.size() == 1);
  PathData d = parse_path(paths[0].attrs.at("d"));
  REQUIRE(d.moves == 2);  // 1-2 and 4-5; 7 stands alone
  REQUIRE(d.lines == 2);
  REQUIRE(with(els, "g", "class", "markers").size() == 1);
  REQUIRE(with(els, "circle").size() == 5);  // a dot on each of the 5 finite points (a short series)
  REQUIRE(has_text(els, "s: 2 points not shown (NaN or infinite)"));

  // A long series: no dots, except on a point left alone between skipped ones.
  plot::Series lng;
  lng.name = "long";
  for (int i = 0; i < 100; i++) lng.x.push_back(i), lng.y.push_back(i % 7);
  lng.y[49] = NAN, lng.y[51] = -INFINITY, lng.x[80] = NAN;
  c.series = {lng};
  els.clear();
  REQUIRE_WELL_FORMED(plot::chart_svg(c), &els);
  require_finite_attributes(els);
  d = parse_path(with(els, "path", "class", "series")[0].attrs.at("d"));
  REQUIRE(d.moves == 3);
  REQUIRE(d.lines == 96 - 3);  // 97 points in 3 stretches (0..48, 52..79, 81..99) and one alone (50)
  REQUIRE(with(els, "circle").size() == 1);
  REQUIRE(has_text(els, "long: 3 points not shown (NaN or infinite)"));

  // Scatter: the dots of the finite points only.
  c.series = {series("p", {1, NAN, 3, 4}, {1, 2, INFINITY, 4})};
  c.mark = plot::Mark::Points;
  els.clear();
  REQUIRE_WELL_FORMED(plot::chart_svg(c), &els);
  REQUIRE(with(els, "g", "class", "points").size() == 1);
  REQUIRE(with(els, "circle").size() == 2 + 1);  // and the legend's dot
  REQUIRE(has_text(els, "p: 2 points not shown (NaN or infinite)"));
}

TEST_CASE("plot: empty series, no data, one point, a constant, fixed ranges", "[plot]") {
  plot::Chart c;
  c.series = {series("empty", {}, {}), series("all nan", {1, 2}, {NAN, NAN})};
  std::vector<Element> els;
  REQUIRE_WELL_FORMED(plot::chart_svg(c), &els);
  REQUIRE(has_text(els, "no data"));
  REQUIRE(has_text(els, "empty (no data)"));
  REQUIRE(has_text(els, "all nan (no data)"));
  REQUIRE(with(els, "path", "class", "series").empty());

  c.series = {series("one", {5}, {3})};
  els.clear();
  REQUIRE_WELL_FORMED(plot::chart_svg(c), &els);
  require_finite_attributes(els);
  REQUIRE(!has_text(els, "no data"));
  auto dots = with(els, "circle");
  REQUIRE(dots.size() == 1);
  Box box = frame_of(els);  // the point in the middle of a range around it
  REQUIRE(std::fabs(attr_num(dots[0], "cx") - (box.x0 + box.x1) / 2) < 1);
  REQUIRE(std::fabs(attr_num(dots[0], "cy") - (box.y0 + box.y1) / 2) < 1);

  c.y.log = true;  // one point on a log axis: a range around it too
  els.clear();
  REQUIRE_WELL_FORMED(plot::chart_svg(c), &els);
  require_finite_attributes(els);
  dots = with(els, "circle");
  REQUIRE(dots.size() == 1);
  REQUIRE(frame_of(els).contains(attr_num(dots[0], "cx"), attr_num(dots[0], "cy")));
  c.y.log = false;

  plot::Series flat;
  flat.name = "flat";
  for (int i = 0; i < 60; i++) flat.x.push_back(i), flat.y.push_back(0.25);
  c.series = {flat};
  els.clear();
  REQUIRE_WELL_FORMED(plot::chart_svg(c), &els);
  require_finite_attributes(els);
  PathData d = parse_path(with(els, "path", "class", "series")[0].attrs.at("d"));
  box = frame_of(els);
  for (auto& [x, y] : d.points) REQUIRE(std::fabs(y - (box.y0 + box.y1) / 2) < 1);

  // A fixed range clips the line at the frame and leaves out what is outside.
  c.series = {series("s", {0, 1, 2, 3}, {0, 10, 1e300, 0})};
  c.y.min = 0, c.y.max = 5;
  els.clear();
  REQUIRE_WELL_FORMED(plot::chart_svg(c), &els);
  box = frame_of(els);
  d = parse_path(with(els, "path", "class", "series")[0].attrs.at("d"));
  for (auto& [x, y] : d.points) REQUIRE(box.contains(x, y));
  REQUIRE(with(els, "circle").size() == 2);  // the two points inside

  c.y.min = 5;
  REQUIRE_THROWS_WITH(plot::chart_svg(c), Catch::Contains("min 5 >= max 5"));
  c.y.min = NAN, c.y.max = NAN;
  c.series = {series("bad", {1, 2}, {1})};
  REQUIRE_THROWS_WITH(plot::chart_svg(c), Catch::Contains("2 x values and 1 y values"));
  c.series = {series("bad", {1}, {1})};
  c.series[0].color = "red\" onload=\"x";
  REQUIRE_THROWS_WITH(plot::chart_svg(c), Catch::Contains("colour"));
}

TEST_CASE("plot: small multiples share one x axis", "[plot]") {
  plot::Panels p;
  p.columns = 2;
  for (int k = 1; k <= 3; k++) {
    plot::Chart c;
    c.title = "panel " + std::to_string(k);
    c.series = {series("s", {0, 10.0 * k}, {0, 1})};
    p.charts.push_back(c);
  }
  std::vector<Element> els;
  REQUIRE_WELL_FORMED(plot::panels_svg(p), &els);
  REQUIRE(with(els, "g", "class", "panel").size() == 3);
  // Every panel's x labels are the same: 0 .. 30.
  std::vector<std::string> labels;
  for (auto& e : with(els, "text", "font-size", "11"))
    if (e.attrs.at("text-anchor") == "middle") labels.push_back(e.text);
  REQUIRE(std::count(labels.begin(), labels.end(), "30") == 3);
  REQUIRE(std::count(labels.begin(), labels.end(), "0") == 3);
}

TEST_CASE("plot: write_svg replaces only its own files", "[plot]") {
  TempDir t;
  const std::string path = t.path + "/a.svg";
  plot::Chart c;
  c.series = {series("s", {1, 2}, {1, 2})};
  plot::write_svg(path, plot::chart_svg(c));
  REQUIRE(slurp(path) == plot::chart_svg(c));
  c.title = "again";
  plot::write_svg(path, plot::chart_svg(c));  // nala's own file: replaced
  REQUIRE(slurp(path).find("again") != std::string::npos);

  const std::string other = t.path + "/other.svg";
  put(other, "<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n");
  REQUIRE_THROWS_WITH(plot::write_svg(other, plot::chart_svg(c)), Catch::Contains(other) && Catch::Contains("did not write"));
  REQUIRE(slurp(other) == "<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n");
  put(other, "");  // an empty file is not nala's either
  REQUIRE_THROWS(plot::write_svg(other, plot::chart_svg(c)));

  const std::string link = t.path + "/link.svg";
  REQUIRE(symlink(path.c_str(), link.c_str()) == 0);
  REQUIRE_THROWS(plot::write_svg(link, plot::chart_svg(c)));
  REQUIRE(fs::is_symlink(link));
}

TEST_CASE("plot: metrics.csv is read by its header", "[plot]") {
  TempDir t;
  const std::string p = t.path + "/m.csv";
  put(p, "b,extra,a\n1,x,2\n");
  REQUIRE_THROWS_WITH(read_numeric_csv(p, "metrics"), Catch::Contains(p + ": line 2, column 'extra': 'x' is not a number"));
  put(p, "b,a\n1,2\n3\n4,5\n");
  REQUIRE_THROWS_WITH(read_numeric_csv(p, "metrics"), Catch::Contains(p + ": line 3 has 1 cells, the header has 2"));
  put(p, "");
  REQUIRE_THROWS_WITH(read_numeric_csv(p, "metrics"), Catch::Contains("no header line"));
  put(p, "b, a ,c\r\n1,2,\r\n3,nan,inf\n\n4,5,6\n7,8");  // the last line cut short by a kill
  CsvTable tb = read_numeric_csv(p, "metrics");
  REQUIRE(tb.columns == std::vector<std::string>{"b", "a", "c"});
  REQUIRE(tb.rows.size() == 3);
  REQUIRE(tb.dropped_lines == 1);
  REQUIRE(tb.column("a") == 1);
  REQUIRE(tb.column("d") == -1);
  const std::vector<double> a = tb.values(1), c = tb.values(2);
  REQUIRE((a[0] == 2 && std::isnan(a[1]) && a[2] == 5));
  REQUIRE((std::isnan(c[0]) && std::isinf(c[1]) && c[2] == 6));
}

TEST_CASE("plot: write_training_plots draws loss, accuracy and learning rate from metrics.csv", "[plot]") {
  TempDir t;
  fs::create_directories(t.path + "/run7");
  const std::string csv = t.path + "/run7/metrics.csv";
  put(csv, kMetrics);
  const std::vector<std::string> files = write_training_plots(csv, t.path + "/run7");
  REQUIRE(files == std::vector<std::string>{t.path + "/run7/loss.svg", t.path + "/run7/accuracy.svg",
                                            t.path + "/run7/lr.svg"});
  std::map<std::string, std::vector<Element>> els;
  for (const char* f : {"loss", "accuracy", "lr"}) {
    REQUIRE_WELL_FORMED(slurp(t.path + "/run7/" + f + ".svg"), &els[f]);
    require_finite_attributes(els[f]);
  }
  REQUIRE(with(els["loss"], "path", "class", "series").size() == 2);
  REQUIRE(with(els["accuracy"], "path", "class", "series").size() == 3);
  REQUIRE(with(els["lr"], "path", "class", "series").size() == 1);
  REQUIRE(has_text(els["loss"], "run7: loss"));
  REQUIRE(has_text(els["loss"], "last: train 0.8 at epoch 5, test 0.97 at epoch 5"));
  REQUIRE(has_text(els["accuracy"], "best test top-1 78.00% at epoch 4"));
  REQUIRE(has_text(els["accuracy"], "accuracy (%)"));
  REQUIRE(has_text(els["lr"], "peak 0.002 at epoch 2, last 0.0005"));
  // Accuracy in %: the top-5 line reaches 99, so the axis goes to 100.
  std::vector<std::string> ylabels;
  for (auto& e : with(els["accuracy"], "text", "text-anchor", "end")) ylabels.push_back(e.text);
  REQUIRE(ylabels.back() == "100");

  // Columns in another order, extra ones, one missing, a NaN loss, a torn last line.
  const std::string csv2 = t.path + "/other.csv";
  put(csv2, "test_top1,lr,epoch,train_loss,test_loss,train_acc,new_column\n"
            "0.5,0.1,1,2.0,nan,0.4,7\n0.6,0.1,2,1.0,1.0,0.5,7\n0.7,0.1,3,0.5,0.9,0.6,7\n0.8,0.1");
  write_training_plots(csv2, t.path + "/out/deeper");
  std::vector<Element> loss, acc;
  REQUIRE_WELL_FORMED(slurp(t.path + "/out/deeper/loss.svg"), &loss);
  REQUIRE_WELL_FORMED(slurp(t.path + "/out/deeper/accuracy.svg"), &acc);
  REQUIRE(has_text(loss, "other: loss"));  // a file not called metrics.csv names the plots
  REQUIRE(has_text(loss, "test: 1 point not shown (NaN or infinite)"));
  REQUIRE(has_text(loss, "the last line of metrics.csv was cut short and is left out"));
  REQUIRE(has_text(acc, "metrics.csv has no 'test_top5' column"));
  REQUIRE(with(acc, "path", "class", "series").size() == 2);

  // Written again: nala's own plots are replaced; another file is not.
  put(t.path + "/run7/lr.svg", "<svg/>");
  REQUIRE_THROWS_WITH(write_training_plots(csv, t.path + "/run7"), Catch::Contains("lr.svg"));
  REQUIRE(slurp(t.path + "/run7/lr.svg") == "<svg/>");

  put(csv2, "step,lr\n1,0.1\n");
  REQUIRE_THROWS_WITH(write_training_plots(csv2, t.path), Catch::Contains("no 'epoch' column"));
  REQUIRE_THROWS_WITH(write_training_plots(t.path + "/absent.csv", t.path), Catch::Contains("absent.csv"));
  put(csv2, "epoch,train_loss\n");  // a run stopped before its first epoch ended
  write_training_plots(csv2, t.path + "/empty");
  std::vector<Element> e;
  REQUIRE_WELL_FORMED(slurp(t.path + "/empty/loss.svg"), &e);
  REQUIRE(has_text(e, "no data"));
  REQUIRE(has_text(e, "no epoch completed yet"));
}

TEST_CASE("plot: nala plot --metrics writes the plots beside it, or into --out", "[plot]") {
  TempDir t;
  fs::create_directories(t.path + "/run");
  put(t.path + "/run/metrics.csv", kMetrics);
  REQUIRE(run({"--metrics", t.path + "/run/metrics.csv"}) == 0);
  for (const char* f : {"loss.svg", "accuracy.svg", "lr.svg"}) REQUIRE(fs::is_regular_file(t.path + "/run/" + f));
  REQUIRE(run({"--metrics", t.path + "/run/metrics.csv", "--out", t.path + "/new dir"}) == 0);
  for (const char* f : {"loss.svg", "accuracy.svg", "lr.svg"}) REQUIRE(fs::is_regular_file(t.path + "/new dir/" + f));
  REQUIRE_THROWS_AS(run({}), UsageError);
  REQUIRE_THROWS_AS(run({"--metrics"}), UsageError);
}

TEST_CASE("plot: write_comparison_plots puts several runs on one chart, a colour and a legend entry a label",
          "[plot]") {
  TempDir t;
  for (const char* d : {"runs/nala-s0", "runs/nala-s1", "runs/relu-s0"}) fs::create_directories(t.path + "/" + d);
  // nala-s0 is best at epoch 1 on validation, nala-s1 at epoch 4; relu-s0 has no validation column.
  put(t.path + "/runs/nala-s0/metrics.csv", "epoch,train_loss,val_top1,test_top1\n"
                                              "1,2.0,0.90,0.50\n2,1.5,0.60,0.60\n3,1.2,0.70,0.70\n4,1.0,0.80,0.80\n");
  put(t.path + "/runs/nala-s1/metrics.csv", "epoch,train_loss,val_top1,test_top1\n"
                                              "1,2.5,0.40,0.45\n2,1.6,0.50,nan\n3,1.1,0.60,0.65\n4,0.9,0.85,0.75\n");
  put(t.path + "/runs/relu-s0/metrics.csv", "epoch,train_loss,test_top1\n1,2.2,0.30\n2,1.8,0.40\n3,1.4,0.50\n");
  const std::vector<PlotRun> runs = {{t.path + "/runs/nala-s0/metrics.csv", "nala"},
                                     {t.path + "/runs/nala-s1/metrics.csv", "nala"},
                                     {t.path + "/runs/relu-s0/metrics.csv", ""}};
  const std::vector<std::string> files = write_comparison_plots(runs, t.path + "/cmp");
  REQUIRE(files == std::vector<std::string>{t.path + "/cmp/compare_val.svg", t.path + "/cmp/compare_test.svg",
                                            t.path + "/cmp/compare_loss.svg"});
  std::map<std::string, std::vector<Element>> els;
  for (const char* f : {"val", "test", "loss"}) {
    REQUIRE_WELL_FORMED(slurp(t.path + "/cmp/compare_" + f + ".svg"), &els[f]);
    require_finite_attributes(els[f]);
  }
  REQUIRE(with(els["val"], "path", "class", "series").size() == 2);
  REQUIRE(has_text(els["val"], "1 run has no 'val_top1' column"));
  REQUIRE(has_text(els["val"], "nala (nala-s0): best 90.00% at epoch 1, last 80.00% at epoch 4"));
  REQUIRE(has_text(els["val"], "nala (nala-s1): best 85.00% at epoch 4, last 85.00% at epoch 4"));
  const std::vector<Element> test_lines = with(els["test"], "path", "class", "series");
  REQUIRE(test_lines.size() == 3);
  REQUIRE(test_lines[0].attrs.at("stroke") == test_lines[1].attrs.at("stroke"));  // one label, one colour
  REQUIRE(test_lines[0].attrs.at("stroke") != test_lines[2].attrs.at("stroke"));
  REQUIRE(has_text(els["test"], "relu-s0: best 50.00% at epoch 3, last 50.00% at epoch 3"));  // named by its folder
  REQUIRE(has_text(els["test"], "3 runs"));
  REQUIRE(has_text(els["test"], "nala (nala-s1): 1 point not shown (NaN or infinite)"));  // the run, by name
  int nala_entries = 0;
  for (const Element& e : with(els["test"], "text"))
    nala_entries += e.text == "nala";
  REQUIRE(nala_entries == 1);  // the legend names a label once
  REQUIRE(has_text(els["loss"], "nala (nala-s1): best 0.9 at epoch 4, last 0.9 at epoch 4"));  // loss: the least

  // From epoch 2: the earlier points are left out, and so is their best.
  write_comparison_plots(runs, t.path + "/late", 2);
  std::vector<Element> late;
  REQUIRE_WELL_FORMED(slurp(t.path + "/late/compare_val.svg"), &late);
  REQUIRE(has_text(late, "nala (nala-s0): best 80.00% at epoch 4, last 80.00% at epoch 4"));
  REQUIRE(has_text(late, "3 runs, from epoch 2"));
  for (const Element& e : with(late, "path", "class", "series")) REQUIRE(parse_path(e.attrs.at("d")).points.size() == 3);

  REQUIRE_THROWS_WITH(write_comparison_plots({{t.path + "/absent.csv", ""}}, t.path + "/x"),
                      Catch::Contains("absent.csv"));
  REQUIRE_THROWS_WITH(write_comparison_plots({}, t.path + "/x"), Catch::Contains("no runs"));
  // Written again: nala's own files are replaced; another file is not.
  put(t.path + "/cmp/compare_loss.svg", "<svg/>");
  REQUIRE_THROWS_WITH(write_comparison_plots(runs, t.path + "/cmp"), Catch::Contains("compare_loss.svg"));
  REQUIRE(slurp(t.path + "/cmp/compare_loss.svg") == "<svg/>");
}

TEST_CASE("plot: nala plot --compare takes the runs after the options", "[plot]") {
  TempDir t;
  for (const char* d : {"a-s0", "a-s12", "b"}) {
    fs::create_directories(t.path + "/" + d);
    put(t.path + "/" + d + "/metrics.csv", kMetrics);
  }
  const std::string a0 = t.path + "/a-s0/metrics.csv", a12 = t.path + "/a-s12/metrics.csv",
                    b = t.path + "/b/metrics.csv";
  REQUIRE(run({"--compare", "--group-seeds", "--out", t.path + "/g", a0, a12, b}) == 0);
  std::vector<Element> e;
  REQUIRE_WELL_FORMED(slurp(t.path + "/g/compare_test.svg"), &e);
  REQUIRE(has_text(e, "a (a-s0): best 78.00% at epoch 4"));
  REQUIRE(has_text(e, "a (a-s12): best 78.00% at epoch 4"));
  REQUIRE(has_text(e, "b: best 78.00% at epoch 4"));
  REQUIRE(run({"--compare", "--labels", "x,y,x", "--out", t.path + "/l", a0, a12, b}) == 0);
  REQUIRE_WELL_FORMED(slurp(t.path + "/l/compare_test.svg"), &e);
  REQUIRE(has_text(e, "y: best 78.00% at epoch 4"));  // a label of one run: its note needs no run name
  REQUIRE(has_text(e, "x (a-s0): best 78.00% at epoch 4"));  // of several: each note names its run too
  REQUIRE(has_text(e, "x (b): best 78.00% at epoch 4"));
  REQUIRE_THROWS_AS(run({"--compare", a0}), UsageError);                                  // no --out
  REQUIRE_THROWS_AS(run({"--compare", "--out", t.path + "/z"}), UsageError);               // no runs
  REQUIRE_THROWS_AS(run({"--compare", "--metrics", a0, "--out", t.path + "/z"}), UsageError);
  REQUIRE_THROWS_AS(run({"--compare", "--labels", "x,y", "--out", t.path + "/z", a0, a12, b}), UsageError);
  REQUIRE_THROWS_AS(run({"--compare", "--labels", "x", "--group-seeds", "--out", t.path + "/z", a0}), UsageError);
  REQUIRE_THROWS_AS(run({"--metrics", a0, b}), UsageError);  // runs after the options need --compare
  REQUIRE_THROWS_AS(run({"--metrics", a0, "--from-epoch", "2"}), UsageError);
  REQUIRE(!fs::exists(t.path + "/z"));
  // A metrics file that cannot be read is named, and no folder is made.
  REQUIRE_THROWS_WITH(run({"--compare", "--out", t.path + "/z", a0, t.path + "/absent.csv"}),
                      Catch::Contains("absent.csv"));
  REQUIRE_THROWS_WITH(run({"--metrics", t.path + "/absent.csv", "--out", t.path + "/z"}), Catch::Contains("absent.csv"));
  REQUIRE(!fs::exists(t.path + "/z"));
}

TEST_CASE("plot: the blank-image check passes a drawn chart and fails blank ones", "[plot]") {
  // PNGs made here with stb_image_write, standing in for the renderer's output.
  TempDir t;
  const int W = 300, H = 200, blue[3] = {0x1f, 0x77, 0xb4};
  auto make = [&](const std::string& name, auto&& paint) {
    std::vector<unsigned char> px((size_t)W * H * 3, 255);
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        unsigned char* p = &px[3 * ((size_t)y * W + x)];
        paint(x, y, p);
      }
    const std::string path = t.path + "/" + name + ".png";
    REQUIRE(stbi_write_png(path.c_str(), W, H, 3, px.data(), W * 3));
    return path;
  };
  auto set = [](unsigned char* p, int r, int g, int b) { p[0] = (unsigned char)r, p[1] = (unsigned char)g, p[2] = (unsigned char)b; };
  const std::string chart = make("chart", [&](int x, int y, unsigned char* p) {
    if (y == 150 - x / 3 || y == 151 - x / 3) set(p, 0x22, 0x79, 0xb0);  // a two-pixel line, nearly the colour
    if (x == 20 || y == 180) set(p, 0x44, 0x44, 0x44);                  // axes
  });
  REQUIRE(blank_problem(count_pixels(chart, blue), 300) == "");

  const std::string white = make("white", [](int, int, unsigned char*) {});
  REQUIRE(blank_problem(count_pixels(white, blue), 300).find("the series colour is in 0 pixels") != std::string::npos);
  const std::string black = make("black", [&](int, int, unsigned char* p) { set(p, 0, 0, 0); });
  REQUIRE(blank_problem(count_pixels(black, blue), 300).find("background") != std::string::npos);
  const std::string swatch = make("swatch", [&](int x, int y, unsigned char* p) {
    if (x >= 250 && x < 270 && y >= 10 && y < 30) set(p, 0x1f, 0x77, 0xb4);  // a legend swatch only
  });
  REQUIRE(blank_problem(count_pixels(swatch, blue), 300).find("spans columns 250..269") != std::string::npos);
  const std::string orange = make("orange", [&](int x, int y, unsigned char* p) {
    if (y == 100) set(p, 0xff, 0x7f, 0x0e);  // another series' colour is not this one
  });
  REQUIRE(blank_problem(count_pixels(orange, blue), 100) != "");
}

TEST_CASE("plot: rsvg-convert renders the training plots, a comparison and a scatter plot, not blank", "[plot]") {
  TempDir t;
  put(t.path + "/metrics.csv", kMetrics);
  write_training_plots(t.path + "/metrics.csv", t.path);
  const int blue[3] = {0x1f, 0x77, 0xb4}, orange[3] = {0xff, 0x7f, 0x0e};
  for (const char* f : {"loss", "accuracy", "lr"}) {
    const std::string png = t.path + "/" + f + ".png";
    render(t.path + "/" + f + ".svg", png, t.path + "/rsvg.log");
    const PixelCount c = count_pixels(png, blue);
    INFO(f << ".png: " << c.w << " x " << c.h);
    REQUIRE(c.w == 760);
    REQUIRE(c.h == 460);
    REQUIRE(blank_problem(c, 300) == "");  // the first series (train), drawn across the plot
    if (std::string(f) != "lr") REQUIRE(blank_problem(count_pixels(png, orange), 300) == "");  // the second
  }

  // A comparison chart: its first run's colour drawn across the plot.
  fs::create_directories(t.path + "/r/x-s0");
  put(t.path + "/r/x-s0/metrics.csv", "epoch,test_top1\n1,0.20\n2,0.30\n3,0.35\n4,0.38\n5,0.40\n");
  write_comparison_plots({{t.path + "/r/x-s0/metrics.csv", ""}, {t.path + "/metrics.csv", "other"}}, t.path + "/cmp");
  render(t.path + "/cmp/compare_test.svg", t.path + "/cmp/test.png", t.path + "/rsvg.log");
  REQUIRE(blank_problem(count_pixels(t.path + "/cmp/test.png", blue), 300) == "");
  REQUIRE(blank_problem(count_pixels(t.path + "/cmp/test.png", orange), 300) == "");

  plot::Chart s;
  s.title = "query norm and entropy";
  s.mark = plot::Mark::Points;
  s.x.label = "query norm", s.y.label = "entropy";
  plot::Series pts;
  pts.name = "layer 1";
  Rng rng(3);
  Tensor u = Tensor::empty({2, 5000});
  rng.fill_uniform(u, 0, 1);
  std::vector<float> v = u.to_vector();
  for (int i = 0; i < 5000; i++) pts.x.push_back(10 * v[(size_t)i]), pts.y.push_back(5 - 0.3 * pts.x.back() + v[5000 + (size_t)i]);
  s.series = {pts};
  plot::write_svg(t.path + "/scatter.svg", plot::chart_svg(s));
  render(t.path + "/scatter.svg", t.path + "/scatter.png", t.path + "/rsvg.log");
  REQUIRE(blank_problem(count_pixels(t.path + "/scatter.png", blue), 2000) == "");
}
