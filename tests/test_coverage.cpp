// tests/test_coverage.cpp - every op in autograd/op_table.h has a gradcheck
// test named "gradcheck: <op>" (or starting with "gradcheck: <op> ").
#include <set>
#include <string>

#include "autograd/op_table.h"
#include "tests/helpers.h"

TEST_CASE("coverage: every op in the op table has a gradcheck", "[coverage]") {
  std::set<std::string> covered;
  for (const auto& tc : Catch::getRegistryHub().getTestCaseRegistry().getAllTests()) {
    const std::string& name = tc.getTestCaseInfo().name;
    const std::string prefix = "gradcheck: ";
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    std::string rest = name.substr(prefix.size());
    covered.insert(rest.substr(0, rest.find(' ')));
  }
  std::string missing;
  for (int i = 0; i < nala::op_count(); i++) {
    const char* op = nala::op_name((nala::OpId)i);
    if (!covered.count(op)) missing += std::string(missing.empty() ? "" : ", ") + op;
  }
  INFO("ops without a gradcheck test: " << missing);
  REQUIRE(missing.empty());
}
