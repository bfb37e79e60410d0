#include "xfer/models/lora.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "xfer/core/error.h"

namespace xfer::models {
namespace {

std::string child_name(const std::string& target) {
  std::string name = target;
  for (size_t i; (i = name.find('.')) != std::string::npos;) name.replace(i, 1, "__");
  return name;
}

torch::nn::LinearImpl* as_linear(torch::nn::Module& m) { return m.as<torch::nn::Linear>(); }
torch::nn::Conv2dImpl* as_conv(torch::nn::Module& m) {
  auto* c = m.as<torch::nn::Conv2d>();
  return c && c->options.groups() == 1 ? c : nullptr;
}

// The tensor the layer's forward() reads (not the registered parameter).
torch::Tensor& weight_member(torch::nn::Module& m) {
  if (auto* l = as_linear(m)) return l->weight;
  return as_conv(m)->weight;
}

}  // namespace

void LoraOptions::validate() const {
  XFER_CHECK_USAGE(rank() >= 1, "lora: rank must be >= 1, got ", rank());
  XFER_CHECK_USAGE(std::isfinite(alpha()) && alpha() >= 0, "lora: alpha must be >= 0, got ", alpha());
  XFER_CHECK_USAGE(linear() || conv(), "lora: adapt at least one of linear and conv layers");
}

Json LoraOptions::to_json() const {
  return {{"rank", rank()}, {"alpha", alpha()}, {"linear", linear()}, {"conv", conv()}};
}

LoraOptions LoraOptions::from_json(const Json& j, const std::string& what) {
  XFER_CHECK(j.is_object(), what, ": lora options must be an object");
  LoraOptions o;
  o.rank(json_get<int64_t>(j, "rank", what));
  o.alpha(json_get_or<double>(j, "alpha", 0.0, what));
  o.linear(json_get_or<bool>(j, "linear", true, what));
  o.conv(json_get_or<bool>(j, "conv", true, what));
  try {
    o.validate();
  } catch (const Error& e) {
    throw Error(str_cat(what, ": ", e.what()));
  }
  return o;
}

LoraAdaptersImpl::LoraAdaptersImpl(LoraOptions options) : options_(std::move(options)) {
  options_.validate();
}

void LoraAdaptersImpl::add(const std::string& target, std::shared_ptr<torch::nn::Module> module) {
  XFER_CHECK(module && (as_linear(*module) || as_conv(*module)), "lora: '", target,
             "' is not a Linear or Conv2d (groups 1) layer");
  torch::Tensor base = module->named_parameters(false)["weight"];
  const int64_t out = base.size(0);
  const int64_t in = base.numel() / out;
  const int64_t r = options_.rank();
  auto opts = base.options().requires_grad(false);
  auto a = torch::empty({r, in}, opts);
  // PEFT's init: A like a Linear(in, r) weight (kaiming-uniform, a = sqrt(5)), B zero.
  torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
  auto b = torch::zeros({out, r}, opts);
  auto child = std::make_shared<torch::nn::Module>();
  a = child->register_parameter("A", a);
  b = child->register_parameter("B", b);
  register_module(child_name(target), child);
  layers_.push_back({target, std::move(module), base, a, b});
}

void LoraAdaptersImpl::refresh() {
  const double s = options_.scale();
  for (auto& l : layers_) {
    weight_member(*l.module) = l.base + torch::mm(l.b, l.a).view(l.base.sizes()) * s;
  }
}

void LoraAdaptersImpl::merge() {
  torch::NoGradGuard no_grad;
  const double s = options_.scale();
  for (auto& l : layers_) {
    l.base.add_(torch::mm(l.b, l.a).view(l.base.sizes()) * s);
    weight_member(*l.module) = l.base;
  }
}

std::vector<std::string> LoraAdaptersImpl::targets() const {
  std::vector<std::string> t;
  for (const auto& l : layers_) t.push_back(l.target);
  return t;
}

std::vector<std::string> lora_eligible(const ClassifierImpl& model, const LoraOptions& options) {
  std::vector<std::string> names;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    if (model.is_head_parameter(item.key() + ".weight")) continue;
    if (item.key() == "lora" || item.key().compare(0, 5, "lora.") == 0) continue;
    auto& m = *item.value();
    if ((options.linear() && as_linear(m)) || (options.conv() && as_conv(m))) names.push_back(item.key());
  }
  return names;
}

LoraAdapters add_lora(ClassifierImpl& model, const LoraOptions& options,
                      std::vector<std::string> targets) {
  XFER_CHECK(!model.lora(), "lora: the model already has adapters");
  options.validate();
  auto eligible = lora_eligible(model, options);
  XFER_CHECK(!eligible.empty(), "lora: the model has no eligible layer (",
             options.linear() ? "Linear" : "", options.linear() && options.conv() ? " or " : "",
             options.conv() ? "Conv2d" : "",
             " weights of native xfer modules outside the head; TorchScript modules cannot be adapted)");
  if (targets.empty()) targets = eligible;
  std::map<std::string, std::shared_ptr<torch::nn::Module>> modules;
  for (const auto& item : model.named_modules("", false)) modules[item.key()] = item.value();
  LoraAdapters adapters(options);
  std::set<std::string> seen;
  for (const auto& t : targets) {
    XFER_CHECK(std::find(eligible.begin(), eligible.end(), t) != eligible.end(), "lora: '", t,
               "' is not an eligible layer of this model");
    XFER_CHECK(seen.insert(t).second, "lora: '", t, "' is named twice among the targets");
    adapters->add(t, modules.at(t));
  }
  model.register_module("lora", adapters);
  model.set_lora(adapters.ptr());
  return adapters;
}

void merge_lora(ClassifierImpl& model) {
  auto adapters = model.lora();
  if (!adapters) return;
  adapters->merge();
  model.unregister_module("lora");
  model.set_lora(nullptr);
}

}  // namespace xfer::models
