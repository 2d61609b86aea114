// What every optimizer shares: argument checks, the step counter and the named state tensors.
#include <cmath>
#include <set>
#include <stdexcept>

#include "mpsim/optim.h"

namespace mpsim {

void Optimizer::step(const std::vector<Parameter*>& params, double lr) {
  if (!(lr >= 0) || !std::isfinite(lr)) {
    throw std::invalid_argument(name() + ": learning rate " + std::to_string(lr) + " is not a finite value >= 0");
  }
  // Every check comes before the first update, so a bad call changes nothing.
  std::set<std::string> seen;
  for (const Parameter* p : params) {
    if (p == nullptr) throw std::invalid_argument(name() + ": null parameter");
    if (p->name.empty()) throw std::invalid_argument(name() + ": a parameter has no name (its state is keyed by name)");
    if (!seen.insert(p->name).second) throw std::invalid_argument(name() + ": duplicate parameter name '" + p->name + "'");
    if (p->grad.shape() != p->value.shape()) {
      throw std::invalid_argument(name() + ": parameter '" + p->name + "' has value " + to_string(p->value.shape()) +
                                  " but gradient " + to_string(p->grad.shape()));
    }
    for (const std::string& kind : state_kinds()) {
      const auto it = tensors_.find(kind + "/" + p->name);
      if (it != tensors_.end() && it->second.shape() != p->value.shape()) {
        throw std::invalid_argument(name() + ": state '" + it->first + "' has shape " + to_string(it->second.shape()) +
                                    " but its parameter " + to_string(p->value.shape()));
      }
    }
  }
  ++step_;
  for (Parameter* p : params) update(*p, lr, step_);
}

Tensor& Optimizer::state_tensor(const std::string& kind, const Parameter& p, bool* created) {
  const auto [it, inserted] = tensors_.try_emplace(kind + "/" + p.name, p.value.shape());
  if (created) *created = inserted;
  return it->second;
}

void Optimizer::load_state(const OptimizerState& state, const std::vector<Parameter*>& params) {
  const std::vector<std::string> kinds = state_kinds();
  std::map<std::string, const Parameter*> by_name;
  for (const Parameter* p : params) by_name[p->name] = p;
  std::map<std::string, std::set<std::string>> kinds_of;  // parameter name -> kinds present
  for (const auto& [key, tensor] : state.tensors) {
    const std::size_t slash = key.find('/');
    const std::string kind = slash == std::string::npos ? key : key.substr(0, slash);
    bool known = false;
    for (const std::string& k : kinds) known = known || k == kind;
    if (!known || slash == std::string::npos || slash + 1 == key.size()) {
      throw std::invalid_argument(name() + ": state tensor '" + key + "' is not one of this optimizer's");
    }
    const std::string param = key.substr(slash + 1);
    if (!params.empty()) {
      const auto it = by_name.find(param);
      if (it == by_name.end()) {
        throw std::invalid_argument(name() + ": state tensor '" + key + "' names no parameter of the model");
      }
      if (it->second->value.shape() != tensor.shape()) {
        throw std::invalid_argument(name() + ": state tensor '" + key + "' has shape " + to_string(tensor.shape()) +
                                    " but the parameter " + to_string(it->second->value.shape()));
      }
    }
    kinds_of[param].insert(kind);
  }
  // A parameter's state is all of its kinds or none (none: not updated yet).
  for (const auto& [param, present] : kinds_of) {
    if (present.size() != kinds.size()) {
      throw std::invalid_argument(name() + ": state of parameter '" + param + "' is incomplete (has " +
                                  std::to_string(present.size()) + " of " + std::to_string(kinds.size()) + " tensors)");
    }
  }
  step_ = state.step;
  tensors_ = state.tensors;
}

}  // namespace mpsim
