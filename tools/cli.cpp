// tools/cli.cpp - see cli.h.
#include "tools/cli.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace nala {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  for (size_t start = 0;;) {
    const size_t comma = s.find(',', start);
    out.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

ArgParser::ArgParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

static ArgParser::Opt make_opt(const std::string& name, const std::string& help, ArgParser::Kind kind, void* dst) {
  ArgParser::Opt o;
  o.name = name, o.help = help, o.kind = kind, o.dst = dst;
  return o;
}

void ArgParser::add_int(const std::string& n, int64_t* d, const std::string& h, int64_t lo, int64_t hi) {
  Opt o = make_opt(n, h, INT, d);
  o.lo = (double)lo, o.hi = (double)hi;
  opts_.push_back(o);
}
void ArgParser::add_float(const std::string& n, float* d, const std::string& h, double lo, double hi) {
  Opt o = make_opt(n, h, FLOAT, d);
  o.lo = lo, o.hi = hi;
  opts_.push_back(o);
}
void ArgParser::add_string(const std::string& n, std::string* d, const std::string& h) {
  opts_.push_back(make_opt(n, h, STRING, d));
}
void ArgParser::add_choice(const std::string& n, std::string* d, const std::string& h,
                           const std::vector<std::string>& c) {
  Opt o = make_opt(n, h, CHOICE, d);
  o.choices = c;
  opts_.push_back(o);
}
void ArgParser::add_flag(const std::string& n, bool* d, const std::string& h) { opts_.push_back(make_opt(n, h, FLAG, d)); }
void ArgParser::add_positional(std::vector<std::string>* d, const std::string& metavar, size_t min_count) {
  positional_ = d, metavar_ = metavar, min_positional_ = min_count;
}

ArgParser::Opt* ArgParser::find(const std::string& name) {
  for (auto& o : opts_)
    if (o.name == name) return &o;
  return nullptr;
}

bool ArgParser::given(const std::string& name) const {
  for (auto& o : opts_)
    if (o.name == name) return o.given;
  return false;
}

void ArgParser::set(Opt& o, const std::string& v) {
  std::string flag = "--" + o.name;
  switch (o.kind) {
    case INT: {
      errno = 0;
      char* end = nullptr;
      long long x = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end || errno) throw UsageError(flag + ": expected an integer, got '" + v + "'");
      if (x < o.lo || x > o.hi) {
        std::ostringstream os;
        os << flag << ": " << x << " is out of range [" << (long long)o.lo << ", " << (long long)o.hi << "]";
        throw UsageError(os.str());
      }
      *(int64_t*)o.dst = x;
      break;
    }
    case FLOAT: {
      errno = 0;
      char* end = nullptr;
      double x = std::strtod(v.c_str(), &end);
      if (v.empty() || *end || errno || !std::isfinite(x))
        throw UsageError(flag + ": expected a number, got '" + v + "'");
      if (x < o.lo || x > o.hi) {
        std::ostringstream os;
        os << flag << ": " << x << " is out of range [" << o.lo << ", " << o.hi << "]";
        throw UsageError(os.str());
      }
      *(float*)o.dst = (float)x;
      break;
    }
    case STRING:
      if (v.empty()) throw UsageError(flag + ": empty value");
      *(std::string*)o.dst = v;
      break;
    case CHOICE: {
      for (auto& c : o.choices)
        if (c == v) {
          *(std::string*)o.dst = v;
          return;
        }
      std::string all;
      for (auto& c : o.choices) all += (all.empty() ? "" : ", ") + c;
      throw UsageError(flag + ": '" + v + "' is not one of " + all);
    }
    case FLAG:
      *(bool*)o.dst = true;
      break;
  }
}

static std::string g_last_usage;
const std::string& ArgParser::last_usage() { return g_last_usage; }

void ArgParser::parse(int argc, char** argv) {
  g_last_usage = usage();
  for (int i = 0; i < argc; i++) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") throw UsageError("");
    if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
      std::string name = a.substr(2), value;
      bool has_value = false;
      size_t eq = name.find('=');
      if (eq != std::string::npos) value = name.substr(eq + 1), name = name.substr(0, eq), has_value = true;
      Opt* o = find(name);
      if (!o) throw UsageError("unknown option --" + name);
      if (o->given) throw UsageError("--" + name + " given twice");
      o->given = true;
      if (o->kind == FLAG) {
        if (has_value) throw UsageError("--" + name + " takes no value");
        set(*o, "");
        continue;
      }
      if (!has_value) {
        if (i + 1 >= argc) throw UsageError("--" + name + " needs a value");
        value = argv[++i];
        // "--out --hflip": a forgotten value must not swallow the next option.
        if (value.compare(0, 2, "--") == 0)
          throw UsageError("--" + name + " needs a value, but the next argument is the option " + value +
                           " (a value that starts with -- is given as --" + name + "=" + value + ")");
      }
      set(*o, value);
    } else if (a.size() > 1 && a[0] == '-' && !(a[1] >= '0' && a[1] <= '9')) {
      throw UsageError("unknown option " + a);
    } else {
      if (!positional_) throw UsageError("unexpected argument '" + a + "'");
      positional_->push_back(a);
    }
  }
  if (positional_ && positional_->size() < min_positional_)
    throw UsageError("missing " + metavar_ + " (at least " + std::to_string(min_positional_) + ")");
}

std::string ArgParser::usage() const {
  std::ostringstream os;
  os << "usage: nala " << command_ << " [options]" << (positional_ ? " " + metavar_ + "..." : "") << "\n  "
     << summary_ << "\n\noptions:\n";
  for (auto& o : opts_) {
    std::string left = "  --" + o.name;
    if (o.kind == INT) left += " N";
    if (o.kind == FLOAT) left += " X";
    if (o.kind == STRING) left += " S";
    if (o.kind == CHOICE) {
      left += " {";
      for (size_t i = 0; i < o.choices.size(); i++) left += (i ? "|" : "") + o.choices[i];
      left += "}";
    }
    os << left << std::string(left.size() < 30 ? 30 - left.size() : 1, ' ') << o.help;
    if (o.kind == INT) os << " [" << (long long)o.lo << ".." << (long long)o.hi << "]";
    os << "\n";
  }
  return os.str();
}

}  // namespace nala
