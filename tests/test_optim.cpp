// Optimizers and learning-rate schedules, against three independent references:
//  - values derived by hand on dyadic inputs, where every float operation is exact;
//  - the update rules evaluated in double (the mathematics, a few float ulps apart);
//  - the documented float32 operation order replayed with MPFR, each operation rounded once
//    to 24 bits (catches a reordered or fused/unfused operation, bit for bit).
// Plus state save/load (a resumed run equals the uninterrupted one bit for bit), 1 vs 2
// threads, schedule boundaries and invalid options.
#include <gtest/gtest.h>
#include <mpfr.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numbers>
#include <stdexcept>
#include <string>
#include <vector>

#include "mpsim/optim.h"
#include "mpsim/safetensors.h"

namespace {

using mpsim::Adam;
using mpsim::AdamOptions;
using mpsim::AdamW;
using mpsim::LrSchedule;
using mpsim::LrScheduleKind;
using mpsim::Optimizer;
using mpsim::Parameter;
using mpsim::Sgd;
using mpsim::SgdOptions;
using mpsim::Tensor;

std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

Parameter make_param(const std::string& name, std::vector<float> value) {
  Parameter p;
  p.name = name;
  const std::size_t n = value.size();
  p.value = Tensor({n}, std::move(value));
  p.grad = Tensor({n});
  return p;
}

// A deterministic gradient of step s for element i, varied in sign and magnitude.
float grad_at(int s, std::size_t i) {
  const double x = std::sin(1.7 * static_cast<double>(i) + 0.9 * s + 0.3) * (1.0 + 0.25 * static_cast<double>(i % 7));
  return static_cast<float>(x);
}

// ---- MPFR: one correctly rounded float operation each ------------------------------------

class Flt {
 public:
  Flt() { mpfr_init2(v_, 24); }
  ~Flt() { mpfr_clear(v_); }
  Flt(const Flt&) = delete;
  Flt& operator=(const Flt&) = delete;
  mpfr_ptr get() { return v_; }
  float value() { return mpfr_get_flt(v_, MPFR_RNDN); }

 private:
  mpfr_t v_;
};

struct In {
  explicit In(float f) {
    mpfr_init2(v, 24);
    mpfr_set_flt(v, f, MPFR_RNDN);  // exact
  }
  ~In() { mpfr_clear(v); }
  In(const In&) = delete;
  In& operator=(const In&) = delete;
  mpfr_t v;
};

float m_mul(float a, float b) {
  In x(a), y(b);
  Flt r;
  mpfr_mul(r.get(), x.v, y.v, MPFR_RNDN);
  return r.value();
}
float m_add(float a, float b) {
  In x(a), y(b);
  Flt r;
  mpfr_add(r.get(), x.v, y.v, MPFR_RNDN);
  return r.value();
}
float m_sub(float a, float b) {
  In x(a), y(b);
  Flt r;
  mpfr_sub(r.get(), x.v, y.v, MPFR_RNDN);
  return r.value();
}
float m_div(float a, float b) {
  In x(a), y(b);
  Flt r;
  mpfr_div(r.get(), x.v, y.v, MPFR_RNDN);
  return r.value();
}
float m_sqrt(float a) {
  In x(a);
  Flt r;
  mpfr_sqrt(r.get(), x.v, MPFR_RNDN);
  return r.value();
}
float m_fma(float a, float b, float c) {
  In x(a), y(b), z(c);
  Flt r;
  mpfr_fma(r.get(), x.v, y.v, z.v, MPFR_RNDN);
  return r.value();
}

// ---- SGD ---------------------------------------------------------------------------------

// Runs `steps` SGD steps on one parameter with gradients g[s] (weight decay needs the value, so
// gradients are given, not the loss).
std::vector<float> run_sgd(const SgdOptions& o, std::vector<float> p0, const std::vector<std::vector<float>>& g, double lr) {
  Sgd opt(o);
  Parameter p = make_param("w", std::move(p0));
  std::vector<Parameter*> ps{&p};
  for (const auto& gs : g) {
    p.grad = Tensor({gs.size()}, gs);
    opt.step(ps, lr);
  }
  return p.value.values();
}

// Dyadic inputs: every operation is exact, so the float results equal the hand derivation.
// p0 = 1, g1 = 0.5, g2 = 0.25, lr = 0.5.
TEST(Sgd, HandDerivedDyadic) {
  const std::vector<std::vector<float>> g{{0.5f}, {0.25f}};
  // Plain: p = 1 - 0.25 - 0.125.
  EXPECT_EQ(run_sgd({}, {1.0f}, g, 0.5)[0], 0.625f);
  // Momentum 0.5: b1 = g1 = 0.5 (the buffer starts as the gradient), p = 0.75;
  // b2 = 0.5 * 0.5 + 0.25 = 0.5, p = 0.75 - 0.25 = 0.5.
  EXPECT_EQ(run_sgd({.momentum = 0.5}, {1.0f}, g, 0.5)[0], 0.5f);
  // Nesterov: b1 = 0.5, g' = 0.5 + 0.5 * 0.5 = 0.75, p = 0.625;
  // b2 = 0.5, g' = 0.25 + 0.25 = 0.5, p = 0.375.
  EXPECT_EQ(run_sgd({.momentum = 0.5, .nesterov = true}, {1.0f}, g, 0.5)[0], 0.375f);
  // Weight decay 0.5 with momentum 0.5: g1' = 0.5 + 0.5 * 1 = 1, b1 = 1, p = 0.5;
  // g2' = 0.25 + 0.25 = 0.5, b2 = 0.5 + 0.5 = 1, p = 0.
  EXPECT_EQ(run_sgd({.momentum = 0.5, .weight_decay = 0.5}, {1.0f}, g, 0.5)[0], 0.0f);
  // Dampening 0.5 is not applied on the first step: b1 = 0.5, p = 0.75;
  // b2 = 0.25 + 0.5 * 0.25 = 0.375, p = 0.75 - 0.1875 = 0.5625.
  EXPECT_EQ(run_sgd({.momentum = 0.5, .dampening = 0.5}, {1.0f}, g, 0.5)[0], 0.5625f);
}

// The rule in double; the float run must stay within a few ulps.
std::vector<double> sgd_double(const SgdOptions& o, std::vector<double> p, const std::vector<std::vector<float>>& g,
                               double lr) {
  std::vector<double> buf(p.size());
  for (std::size_t s = 0; s < g.size(); ++s) {
    for (std::size_t i = 0; i < p.size(); ++i) {
      double gi = g[s][i] + o.weight_decay * p[i];
      if (o.momentum != 0) {
        buf[i] = s == 0 ? gi : o.momentum * buf[i] + (1 - o.dampening) * gi;
        gi = o.nesterov ? gi + o.momentum * buf[i] : buf[i];
      }
      p[i] -= lr * gi;
    }
  }
  return p;
}

std::vector<std::vector<float>> gradients(int steps, std::size_t n) {
  std::vector<std::vector<float>> g(static_cast<std::size_t>(steps), std::vector<float>(n));
  for (int s = 0; s < steps; ++s) {
    for (std::size_t i = 0; i < n; ++i) g[static_cast<std::size_t>(s)][i] = grad_at(s, i);
  }
  return g;
}

const std::vector<float> kP0{0.8f, -1.3f, 0.05f, 2.5f, -0.4f, 1.1f};

TEST(Sgd, MatchesDoubleRule) {
  const auto g = gradients(5, kP0.size());
  const std::vector<double> p0d(kP0.begin(), kP0.end());
  const SgdOptions cases[] = {{},
                              {.momentum = 0.9},
                              {.momentum = 0.9, .dampening = 0.1},
                              {.momentum = 0.9, .nesterov = true},
                              {.momentum = 0.9, .weight_decay = 5e-4},
                              {.momentum = 0.8, .nesterov = true, .weight_decay = 1e-2}};
  for (const SgdOptions& o : cases) {
    const auto got = run_sgd(o, kP0, g, 0.05);
    const auto want = sgd_double(o, p0d, g, 0.05);
    for (std::size_t i = 0; i < got.size(); ++i) {
      // Each step rounds a few times at the scale of |p| + lr * |g| (< 4 here); five steps.
      EXPECT_NEAR(got[i], want[i], 40 * std::numeric_limits<float>::epsilon())
          << "momentum " << o.momentum << " nesterov " << o.nesterov << " wd " << o.weight_decay << " element " << i;
    }
  }
}

// The documented float32 order, replayed with MPFR: equal bits.
TEST(Sgd, FollowsDocumentedFloatOrderBitForBit) {
  const auto g = gradients(6, kP0.size());
  const SgdOptions o{.momentum = 0.9, .dampening = 0.1, .nesterov = false, .weight_decay = 3e-3};
  const SgdOptions on{.momentum = 0.9, .dampening = 0, .nesterov = true, .weight_decay = 3e-3};
  for (const SgdOptions& opt : {o, on}) {
    const double lr = 0.037;
    const auto got = run_sgd(opt, kP0, g, lr);
    const float wd = static_cast<float>(opt.weight_decay), mu = static_cast<float>(opt.momentum);
    const float keep = static_cast<float>(1.0 - opt.dampening), nl = static_cast<float>(-lr);
    std::vector<float> p = kP0, b(p.size());
    for (std::size_t s = 0; s < g.size(); ++s) {
      for (std::size_t i = 0; i < p.size(); ++i) {
        float gi = m_fma(p[i], wd, g[s][i]);
        b[i] = s == 0 ? gi : m_fma(gi, keep, m_mul(b[i], mu));
        gi = opt.nesterov ? m_fma(b[i], mu, gi) : b[i];
        p[i] = m_fma(gi, nl, p[i]);
      }
    }
    for (std::size_t i = 0; i < p.size(); ++i) EXPECT_EQ(bits(got[i]), bits(p[i])) << "element " << i;
  }
}

TEST(Sgd, RejectsInvalidOptions) {
  EXPECT_THROW(Sgd({.momentum = -0.1}), std::invalid_argument);
  EXPECT_THROW(Sgd({.momentum = 1.0}), std::invalid_argument);
  EXPECT_THROW(Sgd({.momentum = std::nan("")}), std::invalid_argument);
  EXPECT_THROW(Sgd({.dampening = 1.5}), std::invalid_argument);
  EXPECT_THROW(Sgd({.weight_decay = -1e-4}), std::invalid_argument);
  EXPECT_THROW(Sgd({.nesterov = true}), std::invalid_argument);  // no momentum
  EXPECT_THROW(Sgd({.momentum = 0.9, .dampening = 0.1, .nesterov = true}), std::invalid_argument);
  try {
    Sgd({.nesterov = true});
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("Nesterov"), std::string::npos) << e.what();
  }
  Sgd ok({.momentum = 0.9});
  Parameter p = make_param("w", {1.0f, 2.0f});
  std::vector<Parameter*> ps{&p};
  EXPECT_THROW(ok.step(ps, -0.1), std::invalid_argument);
  EXPECT_THROW(ok.step(ps, std::numeric_limits<double>::infinity()), std::invalid_argument);
  p.grad = Tensor({3});
  EXPECT_THROW(ok.step(ps, 0.1), std::invalid_argument);  // grad shape != value shape
  p.grad = Tensor({2});
  Parameter q = make_param("w", {1.0f, 2.0f});
  std::vector<Parameter*> dup{&p, &q};
  EXPECT_THROW(ok.step(dup, 0.1), std::invalid_argument);  // two parameters named "w"
  EXPECT_EQ(ok.steps(), 0u);  // rejected calls change nothing
  EXPECT_EQ(p.value[0], 1.0f);
}

// ---- Adam / AdamW ------------------------------------------------------------------------

struct AdamRun {
  std::vector<float> p, m, v;
};

AdamRun run_adam_state(const AdamOptions& o, bool decoupled, std::vector<float> p0,
                       const std::vector<std::vector<float>>& g, double lr) {
  Adam opt(o, decoupled);
  Parameter p = make_param("w", std::move(p0));
  std::vector<Parameter*> ps{&p};
  for (const auto& gs : g) {
    p.grad = Tensor({gs.size()}, gs);
    opt.step(ps, lr);
  }
  const mpsim::OptimizerState st = opt.state();
  return {p.value.values(), st.tensors.at("adam_m/w").values(), st.tensors.at("adam_v/w").values()};
}

std::vector<float> run_adam(const AdamOptions& o, bool decoupled, std::vector<float> p0,
                            const std::vector<std::vector<float>>& g, double lr) {
  return run_adam_state(o, decoupled, std::move(p0), g, lr).p;
}

std::vector<double> adam_double(const AdamOptions& o, bool decoupled, std::vector<double> p,
                                const std::vector<std::vector<float>>& g, double lr) {
  std::vector<double> m(p.size()), v(p.size());
  for (std::size_t s = 0; s < g.size(); ++s) {
    const double t = static_cast<double>(s + 1);
    for (std::size_t i = 0; i < p.size(); ++i) {
      double gi = g[s][i];
      if (decoupled) {
        p[i] -= lr * o.weight_decay * p[i];
      } else {
        gi += o.weight_decay * p[i];
      }
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * gi;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * gi * gi;
      const double mhat = m[i] / (1 - std::pow(o.beta1, t));
      const double vhat = v[i] / (1 - std::pow(o.beta2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + o.eps);
    }
  }
  return p;
}

// First step: m_hat = g and v_hat = g^2, so p moves by lr * g / (|g| + eps), almost lr * sign(g).
TEST(Adam, FirstStepMovesByLrTimesSign) {
  const std::vector<float> p0{1.0f, -2.0f, 0.5f};
  const std::vector<std::vector<float>> g{{0.3f, -7.0f, 1e-3f}};
  const auto got = run_adam({}, false, p0, g, 0.01);
  const float want[] = {0.99f, -1.99f, 0.49f};
  for (std::size_t i = 0; i < 3; ++i) EXPECT_NEAR(got[i], want[i], 2e-7) << i;
}

TEST(Adam, MatchesDoubleRule) {
  const auto g = gradients(6, kP0.size());
  const std::vector<double> p0d(kP0.begin(), kP0.end());
  struct Case {
    AdamOptions o;
    bool decoupled;
  };
  const Case cases[] = {{{}, false},
                        {{.weight_decay = 1e-2}, false},
                        {{.beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6}, false},
                        {{.weight_decay = 1e-2}, true},
                        {{.beta1 = 0.5, .beta2 = 0.9, .weight_decay = 0.1}, true},
                        {{.beta1 = 0.3, .beta2 = 0.95}, false}};  // 1 - beta1 >= 0.5: lerp's other branch
  for (const Case& c : cases) {
    const auto got = run_adam(c.o, c.decoupled, kP0, g, 1e-2);
    const auto want = adam_double(c.o, c.decoupled, p0d, g, 1e-2);
    for (std::size_t i = 0; i < got.size(); ++i) {
      EXPECT_NEAR(got[i], want[i], 16 * std::numeric_limits<float>::epsilon() * std::max(1.0, std::fabs(want[i])))
          << "beta1 " << c.o.beta1 << " wd " << c.o.weight_decay << " decoupled " << c.decoupled << " element " << i;
    }
  }
}

TEST(Adam, FollowsDocumentedFloatOrderBitForBit) {
  // Many elements with small values, so that a one-ulp change anywhere in the chain shows in
  // the parameters, and the moments compared as well.
  const std::size_t n = 64;
  const auto g = gradients(7, n);
  std::vector<float> p0(n);
  for (std::size_t i = 0; i < n; ++i) p0[i] = 1e-3f * grad_at(11, i);
  struct Case {
    AdamOptions o;
    bool decoupled;
  };
  const Case cases[] = {{{.weight_decay = 2e-2}, false}, {{.weight_decay = 2e-2}, true}, {{.beta1 = 0.3}, false}};
  for (const Case& c : cases) {
    const double lr = 3e-3;
    const AdamRun got = run_adam_state(c.o, c.decoupled, p0, g, lr);
    std::vector<float> p = p0, m(n), v(n);
    const float c1 = static_cast<float>(1 - c.o.beta1), b2 = static_cast<float>(c.o.beta2);
    const float c2 = static_cast<float>(1 - c.o.beta2), wd = static_cast<float>(c.o.weight_decay);
    for (std::size_t s = 0; s < g.size(); ++s) {
      const double t = static_cast<double>(s + 1);
      const double bc1 = 1 - std::pow(c.o.beta1, t), bc2 = 1 - std::pow(c.o.beta2, t);
      const float nss = static_cast<float>(-(lr / bc1)), bs = static_cast<float>(std::sqrt(bc2));
      for (std::size_t i = 0; i < n; ++i) {
        float gi = g[s][i];
        if (c.decoupled) {
          p[i] = m_mul(p[i], static_cast<float>(1 - lr * c.o.weight_decay));
        } else {
          gi = m_fma(p[i], wd, gi);
        }
        m[i] = c1 < 0.5f ? m_fma(c1, m_sub(gi, m[i]), m[i]) : m_fma(m_sub(c1, 1.0f), m_sub(gi, m[i]), gi);
        v[i] = m_add(m_mul(v[i], b2), m_mul(m_mul(c2, gi), gi));
        const float d = m_add(m_div(m_sqrt(v[i]), bs), static_cast<float>(c.o.eps));
        p[i] = m_add(p[i], m_div(m_mul(nss, m[i]), d));
      }
    }
    int mismatches = 0;
    for (std::size_t i = 0; i < n; ++i) {
      mismatches += bits(got.p[i]) != bits(p[i]) || bits(got.m[i]) != bits(m[i]) || bits(got.v[i]) != bits(v[i]);
    }
    EXPECT_EQ(mismatches, 0) << "decoupled " << c.decoupled << " beta1 " << c.o.beta1;
  }
}

TEST(Adam, RejectsInvalidOptions) {
  EXPECT_THROW(Adam({.beta1 = 1.0}), std::invalid_argument);
  EXPECT_THROW(Adam({.beta1 = -0.1}), std::invalid_argument);
  EXPECT_THROW(Adam({.beta2 = 1.0}), std::invalid_argument);
  EXPECT_THROW(Adam({.eps = -1e-8}), std::invalid_argument);
  EXPECT_THROW(AdamW({.weight_decay = -0.01}), std::invalid_argument);
  Adam ok({});
  Parameter p = make_param("w", {1.0f});
  std::vector<Parameter*> ps{&p};
  EXPECT_THROW(ok.step(ps, -1e-3), std::invalid_argument);
  EXPECT_EQ(ok.name(), "adam");
  EXPECT_EQ(AdamW({}).name(), "adamw");
}

// ---- state: save, load, resume -------------------------------------------------------------

// Two parameters, one large enough for the parallel path.
struct Model2 {
  Parameter a = make_param("layer.weight", std::vector<float>(40000));
  Parameter b = make_param("layer.bias", {0.25f, -0.5f, 1.0f});
  Model2() {
    for (std::size_t i = 0; i < a.value.size(); ++i) a.value[i] = static_cast<float>(std::cos(0.01 * static_cast<double>(i)));
  }
  std::vector<Parameter*> params() { return {&a, &b}; }
  void set_grads(int s) {
    for (Parameter* p : params()) {
      for (std::size_t i = 0; i < p->grad.size(); ++i) p->grad[i] = grad_at(s, i);
    }
  }
};

std::unique_ptr<Optimizer> make(const std::string& kind) {
  if (kind == "sgd") return std::make_unique<Sgd>(SgdOptions{.momentum = 0.9, .nesterov = true, .weight_decay = 1e-3});
  if (kind == "adam") return std::make_unique<Adam>(AdamOptions{.weight_decay = 1e-3});
  return std::make_unique<AdamW>(AdamOptions{.weight_decay = 1e-2});
}

TEST(OptimizerState, ResumeEqualsUninterruptedBitForBit) {
  for (const std::string kind : {"sgd", "adam", "adamw"}) {
    Model2 full;
    auto opt = make(kind);
    for (int s = 0; s < 6; ++s) {
      full.set_grads(s);
      opt->step(full.params(), 0.01 * (s + 1));
    }

    Model2 part;
    auto first = make(kind);
    for (int s = 0; s < 3; ++s) {
      part.set_grads(s);
      first->step(part.params(), 0.01 * (s + 1));
    }
    const mpsim::OptimizerState saved = first->state();
    EXPECT_EQ(saved.step, 3u);
    if (kind == "sgd") {
      EXPECT_EQ(saved.tensors.size(), 2u);
      EXPECT_TRUE(saved.tensors.count("momentum/layer.weight"));
    } else {
      EXPECT_EQ(saved.tensors.size(), 4u);
      EXPECT_TRUE(saved.tensors.count("adam_m/layer.bias"));
      EXPECT_TRUE(saved.tensors.count("adam_v/layer.weight"));
    }
    first.reset();
    // Through the checkpoint format (float32 safetensors), as a resumed run would read it.
    mpsim::TensorFile file;
    file.tensors = saved.tensors;
    const mpsim::TensorFile read = mpsim::parse_safetensors(mpsim::serialize_safetensors(file));
    auto second = make(kind);
    second->load_state({saved.step, read.tensors}, part.params());
    for (int s = 3; s < 6; ++s) {
      part.set_grads(s);
      second->step(part.params(), 0.01 * (s + 1));
    }
    EXPECT_EQ(second->steps(), 6u);
    for (std::size_t k = 0; k < 2; ++k) {
      const Tensor& x = full.params()[k]->value;
      const Tensor& y = part.params()[k]->value;
      ASSERT_EQ(x.size(), y.size());
      EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0) << kind << " parameter " << k;
    }
  }
}

TEST(OptimizerState, LoadRejectsForeignOrBrokenState) {
  Model2 m;
  Adam adam({});
  mpsim::OptimizerState s;
  s.step = 2;
  s.tensors["adam_m/layer.bias"] = Tensor({3});
  EXPECT_THROW(adam.load_state(s, m.params()), std::invalid_argument);  // adam_v missing
  s.tensors["adam_v/layer.bias"] = Tensor({3});
  EXPECT_NO_THROW(adam.load_state(s, m.params()));
  s.tensors["adam_v/layer.bias"] = Tensor({4});
  EXPECT_THROW(adam.load_state(s, m.params()), std::invalid_argument);  // shape
  s.tensors["adam_v/layer.bias"] = Tensor({3});
  s.tensors["momentum/layer.bias"] = Tensor({3});
  EXPECT_THROW(adam.load_state(s, m.params()), std::invalid_argument);  // SGD's kind
  mpsim::OptimizerState t;
  t.tensors["momentum/conv9.weight"] = Tensor({3});
  Sgd sgd({.momentum = 0.9});
  EXPECT_THROW(sgd.load_state(t, m.params()), std::invalid_argument);  // no such parameter
  try {
    sgd.load_state(t, m.params());
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("conv9.weight"), std::string::npos) << e.what();
  }
}

TEST(OptimizerState, ThreadCountDoesNotChangeBits) {
  for (const std::string kind : {"sgd", "adam", "adamw"}) {
    std::vector<float> results[2];
    for (int threads = 1; threads <= 2; ++threads) {
      omp_set_num_threads(threads);
      Model2 m;
      auto opt = make(kind);
      for (int s = 0; s < 3; ++s) {
        m.set_grads(s);
        opt->step(m.params(), 0.02);
      }
      results[threads - 1] = m.a.value.values();
    }
    omp_set_num_threads(omp_get_num_procs());
    EXPECT_EQ(std::memcmp(results[0].data(), results[1].data(), results[0].size() * sizeof(float)), 0) << kind;
  }
}

// ---- schedules ---------------------------------------------------------------------------

TEST(LrSchedule, StepAndMultistepChangeAtTheirBoundaries) {
  LrSchedule s{.kind = LrScheduleKind::step, .base_lr = 0.1, .gamma = 0.5, .step_size = 10};
  EXPECT_EQ(s.lr(0), 0.1);
  EXPECT_EQ(s.lr(9), 0.1);
  EXPECT_EQ(s.lr(10), 0.05);
  EXPECT_EQ(s.lr(19), 0.05);
  EXPECT_EQ(s.lr(20), 0.025);

  LrSchedule m{.kind = LrScheduleKind::multistep, .base_lr = 1.0, .gamma = 0.1, .milestones = {5, 8}};
  EXPECT_EQ(m.lr(4), 1.0);
  EXPECT_DOUBLE_EQ(m.lr(5), 0.1);
  EXPECT_DOUBLE_EQ(m.lr(7), 0.1);
  EXPECT_DOUBLE_EQ(m.lr(8), 0.01);
  EXPECT_DOUBLE_EQ(m.lr(1000), 0.01);

  LrSchedule c{.kind = LrScheduleKind::constant, .base_lr = 0.3};
  EXPECT_EQ(c.lr(0), 0.3);
  EXPECT_EQ(c.lr(123456), 0.3);
}

TEST(LrSchedule, CosineEndpointsAndMidpoint) {
  LrSchedule s{.kind = LrScheduleKind::cosine, .base_lr = 0.1, .total = 100, .eta_min = 0.002};
  EXPECT_EQ(s.lr(0), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(50), (0.1 + 0.002) / 2);
  EXPECT_DOUBLE_EQ(s.lr(25), 0.002 + 0.098 * (1 + std::cos(std::numbers::pi / 4)) / 2);
  EXPECT_GT(s.lr(99), 0.002);
  EXPECT_EQ(s.lr(100), 0.002);
  EXPECT_EQ(s.lr(250), 0.002);  // stays at the floor after T
  for (std::uint64_t t = 1; t <= 100; ++t) EXPECT_LT(s.lr(t), s.lr(t - 1)) << t;
}

TEST(LrSchedule, WarmupIsLinearAndMultiplies) {
  LrSchedule s{.kind = LrScheduleKind::multistep, .base_lr = 0.4, .gamma = 0.5, .milestones = {3},
               .warmup_steps = 4, .warmup_start = 0.25};
  EXPECT_DOUBLE_EQ(s.lr(0), 0.1);                  // 0.4 * 0.25
  EXPECT_DOUBLE_EQ(s.lr(2), 0.4 * 0.625);          // factor 0.25 + 0.75 * 2/4
  EXPECT_DOUBLE_EQ(s.lr(3), 0.2 * 0.8125);         // milestone passed during warm-up
  EXPECT_DOUBLE_EQ(s.lr(4), 0.2);                  // end of warm-up: factor 1
  LrSchedule w{.kind = LrScheduleKind::constant, .base_lr = 1.0, .warmup_steps = 10, .warmup_start = 0.1};
  for (std::uint64_t t = 1; t < 10; ++t) EXPECT_GT(w.lr(t), w.lr(t - 1));
  EXPECT_EQ(w.lr(10), 1.0);
  EXPECT_EQ(w.lr(11), 1.0);
}

TEST(LrSchedule, EpochsToStepsHoldsOrSmoothsWithinAnEpoch) {
  LrSchedule e{.kind = LrScheduleKind::step, .base_lr = 1.0, .gamma = 0.1, .step_size = 2};
  const LrSchedule s = mpsim::epochs_to_steps(e, 50);
  EXPECT_EQ(s.step_size, 100u);
  EXPECT_EQ(s.lr(99), 1.0);
  EXPECT_DOUBLE_EQ(s.lr(100), 0.1);
  LrSchedule c{.kind = LrScheduleKind::cosine, .base_lr = 1.0, .total = 4};
  const LrSchedule held = mpsim::epochs_to_steps(c, 10, true);
  const LrSchedule smooth = mpsim::epochs_to_steps(c, 10, false);
  EXPECT_EQ(held.lr(10), held.lr(19));  // constant through epoch 1, like scheduler.step() per epoch
  EXPECT_DOUBLE_EQ(held.lr(20), 0.5);   // epoch 2 of 4: the midpoint
  EXPECT_LT(smooth.lr(19), smooth.lr(10));
  EXPECT_DOUBLE_EQ(smooth.lr(20), 0.5);
  EXPECT_THROW(mpsim::epochs_to_steps(c, 0), std::invalid_argument);
}

TEST(LrSchedule, RejectsInvalidSettings) {
  EXPECT_THROW((LrSchedule{.base_lr = -0.1}.lr(0)), std::invalid_argument);
  EXPECT_THROW((LrSchedule{.kind = LrScheduleKind::step, .step_size = 0}.lr(0)), std::invalid_argument);
  EXPECT_THROW((LrSchedule{.kind = LrScheduleKind::step, .gamma = 0, .step_size = 3}.lr(0)), std::invalid_argument);
  EXPECT_THROW((LrSchedule{.kind = LrScheduleKind::multistep, .milestones = {5, 5}}.lr(0)), std::invalid_argument);
  EXPECT_THROW((LrSchedule{.kind = LrScheduleKind::cosine, .total = 0}.lr(0)), std::invalid_argument);
  EXPECT_THROW((LrSchedule{.warmup_steps = 5, .warmup_start = 0}.lr(0)), std::invalid_argument);
  EXPECT_THROW((LrSchedule{.update_every = 0}.lr(0)), std::invalid_argument);
  EXPECT_THROW(mpsim::parse_lr_schedule("linear"), std::invalid_argument);
  EXPECT_EQ(mpsim::parse_lr_schedule("cosine"), LrScheduleKind::cosine);
}

}  // namespace
