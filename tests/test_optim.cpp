// tests/test_optim.cpp - AdamW and SGD against hand-computed values (the
// formulas written out in double here), weight-decay exclusions, skipping of
// parameters without gradients, state save/load round trips, the schedule,
// gradient clipping, and the fast optimiser kernels against the naive ones.
#include <cmath>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/cpu/optim.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "tests/helpers.h"

using namespace nala;

namespace {

// Reference AdamW (decoupled decay) in double, one step t >= 1.
struct RefAdam {
  std::vector<double> p, m, v;
  void step(const std::vector<double>& g, int t, double lr, double b1, double b2, double eps, double wd) {
    for (size_t i = 0; i < p.size(); i++) {
      p[i] -= lr * wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
};

std::vector<float> to_f(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

Tensor param(const Shape& s, const std::vector<float>& v) {
  Tensor t = Tensor::from_vector(s, v);
  t.set_requires_grad(true);
  return t;
}

std::map<std::string, Tensor> snapshot(const NamedTensors& st) {
  std::map<std::string, Tensor> out;
  for (auto& kv : st) out[kv.first] = kv.second.clone();
  return out;
}

}  // namespace

TEST_CASE("adamw: two steps match the formulas; decay skipped for biases, 1-D and patterns", "[nn]") {
  const std::vector<double> p0 = {1.0, -2.0, 0.5};
  const std::vector<std::vector<double>> grads = {{0.3, -0.1, 2.0}, {-0.4, 0.25, 1.5}};
  const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.05;
  std::vector<float> p0f = to_f(p0);
  Tensor w = param({3, 1}, p0f), b = param({3}, p0f), v1 = param({3}, p0f), g4 = param({1, 3, 1, 1}, p0f);
  AdamW opt({{"fc.weight", w}, {"fc.bias", b}, {"scale", v1}, {"blk.gamma_1", g4}}, lr, b1, b2, eps, wd,
            {"gamma_"});
  REQUIRE(opt.decays(0));
  REQUIRE(!opt.decays(1));
  REQUIRE(!opt.decays(2));
  REQUIRE(!opt.decays(3));
  REQUIRE(opt.no_decay_names() == std::vector<std::string>{"fc.bias", "scale", "blk.gamma_1"});
  RefAdam with{p0, {0, 0, 0}, {0, 0, 0}}, without = with;
  for (int t = 1; t <= 2; t++) {
    for (Tensor* p : {&w, &b, &v1, &g4}) p->set_grad(Tensor::from_vector(p->shape(), to_f(grads[t - 1])));
    opt.step();
    with.step(grads[t - 1], t, lr, b1, b2, eps, wd);
    without.step(grads[t - 1], t, lr, b1, b2, eps, 0.0);
    REQUIRE_CLOSE(w.to_vector(), to_f(with.p), 1e-6, 1e-6);
    REQUIRE_CLOSE(b.to_vector(), to_f(without.p), 1e-6, 1e-6);
    REQUIRE_CLOSE(v1.to_vector(), to_f(without.p), 1e-6, 1e-6);
    REQUIRE_CLOSE(g4.to_vector(), to_f(without.p), 1e-6, 1e-6);
  }
  // The decay made a difference, and the first step moved each weight by ~lr (sign of g).
  REQUIRE(std::fabs(with.p[0] - without.p[0]) > 1e-4);
  auto st = opt.state();
  REQUIRE(st[0].first == "adamw.exp_avg.fc.weight");
  REQUIRE(st[1].first == "adamw.exp_avg_sq.fc.weight");
  REQUIRE(st[2].first == "adamw.step.fc.weight");
  REQUIRE(st[2].second.to_vector_i64()[0] == 2);
  REQUIRE_CLOSE(st[0].second.to_vector(), to_f(with.m), 1e-7, 1e-6);
}

TEST_CASE("adamw: parameters without a gradient are skipped", "[nn]") {
  Tensor a = param({2, 2}, {1, 2, 3, 4}), b = param({2, 2}, {5, 6, 7, 8});
  AdamW opt({{"a", a}, {"b", b}}, 0.01);
  a.set_grad(Tensor::ones({2, 2}));
  opt.step();
  REQUIRE(b.to_vector() == std::vector<float>{5, 6, 7, 8});  // no decay either
  REQUIRE(a.to_vector() != std::vector<float>{1, 2, 3, 4});
  auto st = opt.state();
  REQUIRE(st[2].second.to_vector_i64()[0] == 1);
  REQUIRE(st[5].second.to_vector_i64()[0] == 0);
  opt.zero_grad();
  REQUIRE(!a.grad().defined());
  b.set_grad(Tensor::ones({3}));
  REQUIRE_THROWS_WITH(opt.step(), Catch::Contains("adamw") && Catch::Contains("[3]") && Catch::Contains("[2, 2]"));
  REQUIRE_THROWS_WITH(AdamW({{"a", a}, {"a", b}}, 0.1), Catch::Contains("'a' appears twice"));
  REQUIRE_THROWS_WITH(AdamW({{"a", a}, {"b", a}}, 0.1), Catch::Contains("same tensor"));
}

TEST_CASE("sgd: momentum and nesterov match the formulas", "[nn]") {
  const std::vector<double> p0 = {1.0, -2.0, 0.5};
  const std::vector<std::vector<double>> grads = {{0.3, -0.1, 2.0}, {-0.4, 0.25, 1.5}, {0.1, 0.1, -1.0}};
  const double lr = 0.05, mom = 0.9, wd = 0.01;
  for (bool nesterov : {false, true}) {
    for (double decay : {0.0, wd}) {
      Tensor w = param({3}, to_f(p0));
      SGD opt({{"w", w}}, lr, mom, decay, nesterov);
      std::vector<double> p = p0, buf(3, 0.0);
      for (int t = 0; t < 3; t++) {
        w.set_grad(Tensor::from_vector({3}, to_f(grads[t])));
        opt.step();
        for (int i = 0; i < 3; i++) {
          double d = grads[t][i] + decay * p[i];
          buf[i] = t == 0 ? d : mom * buf[i] + d;
          d = nesterov ? d + mom * buf[i] : buf[i];
          p[i] -= lr * d;
        }
        INFO("nesterov " << nesterov << " wd " << decay << " step " << t);
        REQUIRE_CLOSE(w.to_vector(), to_f(p), 1e-6, 1e-6);
      }
    }
  }
  // Plain SGD without momentum keeps no buffer.
  Tensor w = param({2}, {1, 1});
  SGD plain({{"w", w}}, 0.5, 0.0);
  w.set_grad(Tensor::from_vector({2}, {1, -2}));
  plain.step();
  REQUIRE(w.to_vector() == std::vector<float>{0.5f, 2.0f});
  REQUIRE(plain.state().size() == 1);
}

TEST_CASE("optim: state save/load round trip reproduces the next step bit for bit", "[nn]") {
  Rng rng(17);
  auto make = [&](Rng& r) {
    return NamedTensors{{"l.weight", test::randn({5, 7}, r, 1, true)}, {"l.bias", test::randn({7}, r, 1, true)}};
  };
  auto grads = [&](Rng& r) {
    return std::vector<Tensor>{test::randn({5, 7}, r), test::randn({7}, r)};
  };
  for (int kind = 0; kind < 2; kind++) {
    auto mk_opt = [&](NamedTensors ps) -> std::unique_ptr<Optimizer> {
      if (kind == 0) return std::make_unique<AdamW>(ps, 1e-2);
      return std::make_unique<SGD>(ps, 1e-2, 0.9, 1e-4, true);
    };
    NamedTensors pa = make(rng);
    auto A = mk_opt(pa);
    auto g1 = grads(rng), g2 = grads(rng), g3 = grads(rng);
    for (auto& g : {g1, g2}) {
      for (size_t i = 0; i < pa.size(); i++) pa[i].second.set_grad(g[i]);
      A->step();
    }
    // Snapshot: parameters and optimiser state.
    std::map<std::string, Tensor> st = snapshot(A->state());
    NamedTensors pb;
    for (auto& kv : pa) pb.emplace_back(kv.first, kv.second.clone().set_requires_grad(true));
    for (size_t i = 0; i < pa.size(); i++) pa[i].second.set_grad(g3[i]);
    A->step();

    auto B = mk_opt(pb);
    B->load_state(st);
    for (size_t i = 0; i < pb.size(); i++) pb[i].second.set_grad(g3[i]);
    B->step();
    for (size_t i = 0; i < pa.size(); i++) REQUIRE(pa[i].second.to_vector() == pb[i].second.to_vector());
    auto sa = A->state(), sb = B->state();
    REQUIRE(sa.size() == sb.size());
    for (size_t i = 0; i < sa.size(); i++) {
      REQUIRE(sa[i].first == sb[i].first);
      if (sa[i].second.dtype() == DType::F32) REQUIRE(sa[i].second.to_vector() == sb[i].second.to_vector());
      else REQUIRE(sa[i].second.to_vector_i64() == sb[i].second.to_vector_i64());
    }

    // Clear errors on missing, mismatched and unknown entries.
    std::string pre = kind == 0 ? "adamw" : "sgd";
    std::string key = kind == 0 ? "adamw.exp_avg_sq.l.bias" : "sgd.momentum_buffer.l.bias";
    auto missing = st;
    missing.erase(key);
    REQUIRE_THROWS_WITH(B->load_state(missing), Catch::Contains("missing entry '" + key + "'"));
    auto wrong = st;
    wrong[key] = Tensor::zeros({6});
    REQUIRE_THROWS_WITH(B->load_state(wrong), Catch::Contains(key) && Catch::Contains("[6]") &&
                                                  Catch::Contains("[7]"));
    auto unknown = st;
    unknown[pre + ".step.other"] = Tensor::from_vector_i64({}, {1});
    unknown["model.weight"] = Tensor::zeros({1});  // other keys of a checkpoint are ignored
    REQUIRE_THROWS_WITH(B->load_state(unknown), Catch::Contains("unknown entry '" + pre + ".step.other'"));
    auto loose = st;
    loose["model.weight"] = Tensor::zeros({1});
    REQUIRE_NOTHROW(B->load_state(loose));
  }
}

TEST_CASE("schedule: warm-up then cosine to min_lr", "[nn]") {
  const double base = 1e-3, mn = 1e-5, start = 1e-6;
  WarmupCosine s(base, mn, 10, start, 110);
  auto near = [](double a, double b) { return std::fabs(a - b) <= 1e-15 + 1e-12 * std::fabs(b); };
  REQUIRE(near(s.lr_at(0), start));
  REQUIRE(near(s.lr_at(5), start + (base - start) * 0.5));
  REQUIRE(near(s.lr_at(9), start + (base - start) * 0.9));
  REQUIRE(near(s.lr_at(10), base));
  REQUIRE(near(s.lr_at(35), mn + 0.5 * (base - mn) * (1 + std::cos(M_PI * 0.25))));
  REQUIRE(near(s.lr_at(60), 0.5 * (base + mn)));
  REQUIRE(near(s.lr_at(109), mn + 0.5 * (base - mn) * (1 + std::cos(M_PI * 0.99))));
  REQUIRE(near(s.lr_at(110), mn));
  REQUIRE(near(s.lr_at(1000), mn));
  for (int64_t t = 10; t < 110; t++) REQUIRE(s.lr_at(t + 1) <= s.lr_at(t));
  WarmupCosine none(base, mn, 0, start, 100);
  REQUIRE(near(none.lr_at(0), base));
  REQUIRE_THROWS_WITH(WarmupCosine(base, mn, 20, start, 10), Catch::Contains("WarmupCosine"));
}

TEST_CASE("clip_grad_norm: total norm in double, exact scaling", "[nn]") {
  Tensor a = param({2}, {0, 0}), b = param({1}, {0}), c = param({3}, {0, 0, 0});
  a.set_grad(Tensor::from_vector({2}, {3, 4}));
  b.set_grad(Tensor::from_vector({1}, {12}));  // c has no grad: ignored
  float n = clip_grad_norm({a, b, c}, 20.0f);
  REQUIRE(n == 13.0f);
  REQUIRE(a.grad().to_vector() == std::vector<float>{3, 4});  // below max_norm: untouched
  n = clip_grad_norm({a, b, c}, 6.5f);
  REQUIRE(n == 13.0f);
  float coef = (float)(6.5 / (13.0 + 1e-6));
  REQUIRE(a.grad().to_vector() == std::vector<float>{3 * coef, 4 * coef});
  REQUIRE(b.grad().to_vector() == std::vector<float>{12 * coef});
  REQUIRE(std::fabs(grad_norm({a, b}) - 6.5) < 1e-5);
  REQUIRE(!c.grad().defined());
  b.set_grad(Tensor::from_vector({1}, {NAN}));
  REQUIRE(std::isnan(clip_grad_norm({a, b}, 1.0f)));
  REQUIRE(a.grad().to_vector() == std::vector<float>{3 * coef, 4 * coef});  // non-finite: untouched
}

TEST_CASE("optim kernels: fast versions against the naive ones; deterministic norm", "[nn]") {
  Rng rng(9);
  const int64_t n = 100003;  // odd, and large enough for the parallel path
  Tensor p = test::randn({n}, rng), g = test::randn({n}, rng), m = test::randn({n}, rng, 0.1f);
  Tensor v = test::randu({n}, rng, 0.0f, 0.5f);
  Tensor p2 = p.clone(), m2 = m.clone(), v2 = v.clone();
  AdamWCoefs c = adamw_coefs(1e-3, 0.9, 0.999, 1e-8, 0.05, 7);
  cpu::adamw_step(p.f32(), g.f32(), m.f32(), v.f32(), n, c);
  cpu::adamw_step_naive(p2.f32(), g.f32(), m2.f32(), v2.f32(), n, c);
  REQUIRE_CLOSE(p, p2, 1e-6, 1e-5);
  REQUIRE_CLOSE(m, m2, 1e-6, 1e-5);
  REQUIRE_CLOSE(v, v2, 1e-6, 1e-5);

  for (bool first : {true, false})
    for (bool nesterov : {false, true}) {
      Tensor q = test::randn({n}, rng), buf = test::randn({n}, rng);
      Tensor q2 = q.clone(), buf2 = buf.clone();
      cpu::sgd_step(q.f32(), g.f32(), buf.f32(), n, 0.1f, 0.9f, 0.0f, 1e-4f, nesterov, first);
      cpu::sgd_step_naive(q2.f32(), g.f32(), buf2.f32(), n, 0.1f, 0.9f, 0.0f, 1e-4f, nesterov, first);
      REQUIRE_CLOSE(q, q2, 1e-6, 1e-5);
      REQUIRE_CLOSE(buf, buf2, 1e-6, 1e-5);
    }

  double fast = cpu::grad_sum_squares(g.f32(), n), naive = cpu::grad_sum_squares_naive(g.f32(), n);
  REQUIRE(std::fabs(fast - naive) <= 1e-12 * naive);
#ifdef _OPENMP
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  double one = cpu::grad_sum_squares(g.f32(), n);
  omp_set_num_threads(3);
  double three = cpu::grad_sum_squares(g.f32(), n);
  omp_set_num_threads(saved);
  REQUIRE(one == fast);
  REQUIRE(three == fast);
#endif
  Tensor x = Tensor::from_vector({3}, {1, -2, 4});
  cpu::grad_scale(x.f32(), 3, 0.5f);
  REQUIRE(x.to_vector() == std::vector<float>{0.5f, -1, 2});
}
