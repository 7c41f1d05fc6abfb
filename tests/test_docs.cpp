// tests/test_docs.cpp - the code's citations of docs/SPEC.md name sections
// that exist.
//
// Scans the repository's sources, scripts and Markdown files (not build/,
// runs/ or hidden folders other than .ci) for section references written as
// a section sign followed by N or N.M, and checks that docs/SPEC.md has a
// heading "## N." or "### N.M" for each. It also refuses the older citation
// forms (the bare word in capitals, or the path followed by "section"), so
// that every citation has the one form the scan can check. Runs from the
// repository root, like the other tests that read files.
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/helpers.h"

namespace fs = std::filesystem;

namespace {

// This file is left out of the scan: it spells out the forms it checks.
const std::string kSect = "\xC2\xA7";  // the section sign in UTF-8
const std::string kDoc = "docs/SPEC.md";
const std::string kWord = "SPEC";

bool digit(char c) { return std::isdigit((unsigned char)c) != 0; }
bool word_char(char c) { return std::isalnum((unsigned char)c) || c == '_'; }

// The repository root: the folder above the one holding this source file.
fs::path repo_root() {
  fs::path here = fs::path(__FILE__).parent_path();
  return here.has_parent_path() ? here.parent_path() : fs::path(".");
}

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

// "N" from "## N. Title" and "N.M" from "### N.M Title" in the spec.
std::set<std::string> spec_sections(const std::string& text) {
  std::set<std::string> out;
  std::istringstream is(text);
  for (std::string line; std::getline(is, line);) {
    size_t hashes = 0;
    while (hashes < line.size() && line[hashes] == '#') hashes++;
    if ((hashes != 2 && hashes != 3) || hashes >= line.size() || line[hashes] != ' ') continue;
    size_t i = hashes + 1, j = i;
    while (j < line.size() && (digit(line[j]) || line[j] == '.')) j++;
    std::string num = line.substr(i, j - i);
    if (hashes == 2) {  // "## N."
      if (num.size() >= 2 && num.find('.') == num.size() - 1) out.insert(num.substr(0, num.size() - 1));
    } else {  // "### N.M"
      if (!num.empty() && num.back() == '.') num.pop_back();
      size_t dot = num.find('.');
      if (dot != std::string::npos && dot > 0 && dot + 1 < num.size() && num.find('.', dot + 1) == std::string::npos)
        out.insert(num);
    }
  }
  return out;
}

struct Problem {
  std::string where, what;
};

// Every section reference in `text` (named `name` in messages) must be in
// `sections`; older citation forms are problems too. Adds the references
// found to *count.
void check_text(const std::string& name, const std::string& text, const std::set<std::string>& sections,
                std::vector<Problem>& problems, int* count) {
  std::istringstream is(text);
  int lineno = 0;
  for (std::string line; std::getline(is, line);) {
    lineno++;
    const std::string where = name + ":" + std::to_string(lineno);
    for (size_t at = line.find(kSect); at != std::string::npos; at = line.find(kSect, at + 1)) {
      size_t i = at + kSect.size(), j = i;
      while (j < line.size() && digit(line[j])) j++;
      if (j == i) continue;  // a placeholder such as "N"
      std::string num = line.substr(i, j - i);
      if (j + 1 < line.size() && line[j] == '.' && digit(line[j + 1])) {
        size_t k = j + 1;
        while (k < line.size() && digit(line[k])) k++;
        num = line.substr(i, k - i);
      }
      (*count)++;
      if (!sections.count(num)) problems.push_back({where, "cites section " + num + ", which " + kDoc + " lacks"});
    }
    for (size_t at = line.find(kWord); at != std::string::npos; at = line.find(kWord, at + 1)) {
      const size_t end = at + kWord.size();
      if (line.compare(end, 3, ".md") == 0) {  // the file's name: a section sign may follow, no number
        size_t k = end + 3;
        while (k < line.size() && line[k] == ' ') k++;
        const bool old_form =
            k > end + 3 && (line.compare(k, 7, "section") == 0 || (k < line.size() && digit(line[k])));
        if (old_form) problems.push_back({where, "write \"" + kDoc + " " + kSect + "N\": " + line.substr(at)});
      } else if ((at == 0 || !word_char(line[at - 1])) && (end == line.size() || !word_char(line[end]))) {
        problems.push_back({where, "a citation without the path: write \"" + kDoc + " " + kSect + "N\""});
      }
    }
  }
}

bool scanned_file(const fs::path& p) {
  static const std::set<std::string> exts = {".cpp", ".h", ".cu", ".cuh", ".py", ".sh", ".mk", ".md"};
  const std::string name = p.filename().string();
  return exts.count(p.extension().string()) || name == "Makefile" || name == "run";
}

std::string report(const std::vector<Problem>& problems) {
  std::string r;
  for (const auto& p : problems) r += p.where + ": " + p.what + "\n";
  return r;
}

}  // namespace

TEST_CASE("docs: the citation check finds missing sections and old forms", "[docs]") {
  const std::set<std::string> sections = spec_sections("# Title\n\n## 1. One\n### 1.1 Sub\n## 2. Two\n#### 2.9 deep\n");
  REQUIRE(sections == std::set<std::string>{"1", "1.1", "2"});
  std::vector<Problem> problems;
  int count = 0;
  const std::string good = "// (" + kDoc + " " + kSect + "1), " + kSect + "1.1 and " + kSect + "2; " + kSect +
                           "N\n// docs/       " + kWord + ".md, the model's math; [" + kDoc + "](" + kDoc + ")\n";
  check_text("good.h", good, sections, problems, &count);
  INFO(report(problems));
  REQUIRE(problems.empty());
  REQUIRE(count == 3);
  const std::string bad = "// " + kDoc + " " + kSect + "3\n// " + kDoc + " " + kSect + "2.9\n// " + kWord +
                          " section 1\n// " + kDoc + " section 2\n// " + kSect + "1.2.\n// " + kWord +
                          ".md sections 1-6\n// " + kWord + " 7\n";
  check_text("bad.h", bad, sections, problems, &count);
  INFO(report(problems));
  REQUIRE(problems.size() == 7);
  for (size_t i = 0; i < problems.size(); i++) REQUIRE(problems[i].where == "bad.h:" + std::to_string(i + 1));
}

TEST_CASE("docs: every docs/SPEC.md citation names an existing section", "[docs]") {
  const fs::path root = repo_root();
  const fs::path spec = root / "docs" / "SPEC.md";
  INFO("spec " << spec.string() << " (run the tests from the repository root)");
  REQUIRE(fs::is_regular_file(spec));
  const std::set<std::string> sections = spec_sections(read_all(spec));
  for (const char* s : {"1", "2", "2.1", "2.3", "3", "4", "5", "6", "6.1", "7", "8", "9", "10"}) {
    INFO("section " << s);
    REQUIRE(sections.count(s));
  }

  static const std::set<std::string> skip_dirs = {"build", "runs", "third_party_headers", "__pycache__", "out"};
  std::vector<Problem> problems;
  int count = 0, files = 0;
  bool saw_kernel = false;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    const fs::path& p = it->path();
    const std::string name = p.filename().string();
    if (it->is_directory()) {
      if (skip_dirs.count(name) || (name[0] == '.' && name != ".ci")) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file() || !scanned_file(p) || name == "test_docs.cpp") continue;
    const std::string rel = fs::relative(p, root).generic_string();
    files++;
    saw_kernel |= rel == "kernels/cpu/attention.h";
    check_text(rel, read_all(p), sections, problems, &count);
  }
  INFO(files << " files, " << count << " section references");
  REQUIRE(saw_kernel);
  REQUIRE(count > 0);
  INFO(report(problems));
  REQUIRE(problems.empty());
}
