#include "autodiff/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "autodiff/random.h"
#include "autodiff/tape.h"

namespace remoe {
namespace {

double weighted_sum(const Tensor& out, const Tensor& w) {
  const double* o = out.data<double>();
  const double* wp = w.data<double>();
  double acc = 0;
  for (int64_t i = 0; i < out.numel(); ++i) acc += o[i] * wp[i];
  return acc;
}

}  // namespace

std::vector<GradCheckResult> gradcheck(const GradFn& f, const std::vector<Tensor>& inputs, double h,
                                       uint64_t seed) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    REMOE_CHECK(x.defined() && x.device() == Device::cpu, "gradcheck: input ", i,
                " must be a defined CPU tensor");
    if (x.requires_grad())
      REMOE_CHECK(x.dtype() == DType::f64, "gradcheck: input ", i, " is ", dtype_name(x.dtype()),
                  "; gradients are checked in f64");
    x.zero_grad();
  }
  clear_tape();

  const Tensor out = f(inputs);
  REMOE_CHECK(out.dtype() == DType::f64, "gradcheck: f returned ", dtype_name(out.dtype()),
              ", expected f64");
  Rng rng(seed);
  const Tensor w = randn(out.shape(), DType::f64, rng);
  backward(out, w);

  std::vector<GradCheckResult> results;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.requires_grad()) continue;
    const int64_t n = x.numel();
    std::vector<double> analytic(static_cast<size_t>(n), 0.0);
    if (x.grad().defined()) analytic = x.grad().to_vector<double>();

    std::vector<double> numeric(static_cast<size_t>(n));
    double* xp = x.data<double>();
    {
      NoGradGuard no_grad;
      for (int64_t j = 0; j < n; ++j) {
        const double saved = xp[j];
        xp[j] = saved + h;
        const double plus = weighted_sum(f(inputs), w);
        xp[j] = saved - h;
        const double minus = weighted_sum(f(inputs), w);
        xp[j] = saved;
        numeric[size_t(j)] = (plus - minus) / (2 * h);
      }
    }

    double diff = 0, an = 0, nn = 0;
    for (int64_t j = 0; j < n; ++j) {
      diff += std::pow(analytic[size_t(j)] - numeric[size_t(j)], 2);
      an += analytic[size_t(j)] * analytic[size_t(j)];
      nn += numeric[size_t(j)] * numeric[size_t(j)];
    }
    GradCheckResult r;
    r.input = x.name().empty() ? "input " + std::to_string(i) : x.name();
    r.analytic_norm = std::sqrt(an);
    r.numeric_norm = std::sqrt(nn);
    const double denom = std::max(r.analytic_norm, r.numeric_norm);
    r.rel_error = denom > 0 ? std::sqrt(diff) / denom : 0.0;
    results.push_back(r);
  }
  for (const Tensor& x : inputs) x.zero_grad();
  return results;
}

double max_rel_error(const std::vector<GradCheckResult>& results) {
  double m = 0;
  for (const auto& r : results) m = std::max(m, r.rel_error);
  return m;
}

std::string report(const std::vector<GradCheckResult>& results) {
  std::ostringstream os;
  os.precision(3);
  for (const auto& r : results)
    os << r.input << ": rel_error " << r.rel_error << " (|analytic| " << r.analytic_norm
       << ", |numeric| " << r.numeric_norm << ")\n";
  return os.str();
}

}  // namespace remoe
