#include "xfer/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <mutex>
#include <set>
#include <sstream>
#include <type_traits>

#include "xfer/attack/attack.h"
#include "xfer/core/dist.h"
#include "xfer/core/error.h"
#include "xfer/core/parse.h"
#include "xfer/core/progress.h"
#include "xfer/core/runtime.h"
#include "xfer/data/loader.h"
#include "xfer/train/freeze.h"
#include "xfer/train/scheduler.h"

namespace xfer::train {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A detached copy of every parameter and buffer, to restore later.
std::vector<torch::Tensor> snapshot(torch::nn::Module& m) {
  std::vector<torch::Tensor> s;
  for (auto& p : m.parameters()) s.push_back(p.detach().clone());
  for (auto& b : m.buffers()) s.push_back(b.detach().clone());
  return s;
}

void restore(torch::nn::Module& m, const std::vector<torch::Tensor>& s) {
  torch::NoGradGuard no_grad;
  size_t i = 0;
  for (auto& p : m.parameters()) p.copy_(s.at(i++));
  for (auto& b : m.buffers()) b.copy_(s.at(i++));
}

}  // namespace

void TrainOptions::validate() const {
  XFER_CHECK_USAGE(epochs() >= 1, "--epochs must be >= 1, got ", epochs());
  XFER_CHECK_USAGE(batch_size() >= 1, "--batch-size must be >= 1, got ", batch_size());
  XFER_CHECK_USAGE(optimizer() == "adamw" || optimizer() == "sgd",
                   "--optimizer: expected adamw or sgd, got '", optimizer(), "'");
  XFER_CHECK_USAGE(std::isfinite(lr()) && lr() > 0, "--lr must be a positive number, got ", lr());
  XFER_CHECK_USAGE(std::isfinite(weight_decay()) && weight_decay() >= 0,
                   "--weight-decay must be >= 0, got ", weight_decay());
  XFER_CHECK_USAGE(momentum() >= 0 && momentum() < 1, "--momentum must be in [0, 1), got ",
                   momentum());
  XFER_CHECK_USAGE(schedule() == "cosine" || schedule() == "constant",
                   "--schedule: expected cosine or constant, got '", schedule(), "'");
  XFER_CHECK_USAGE(warmup_epochs() >= 0 && warmup_epochs() <= double(epochs()),
                   "--warmup-epochs must be in [0, epochs], got ", warmup_epochs());
  XFER_CHECK_USAGE(label_smoothing() >= 0 && label_smoothing() < 1,
                   "--label-smoothing must be in [0, 1), got ", label_smoothing());
  XFER_CHECK_USAGE(augment().crop_padding >= 0, "--crop-padding must be >= 0");
  parse_adv_train(adv_train());
  XFER_CHECK_USAGE(objective() == "supervised" || objective() == "simclr",
                   "--objective: expected supervised or simclr, got '", objective(), "'");
  if (objective() == "simclr") {
    XFER_CHECK_USAGE(std::isfinite(temperature()) && temperature() >= 0.01 && temperature() <= 10,
                     "--temperature must be in [0.01, 10], got ", temperature());
    views().validate();
    XFER_CHECK_USAGE(adv_train().empty(), "--adv-train needs labels: it cannot be combined with --objective simclr");
    XFER_CHECK_USAGE(label_smoothing() == 0, "--label-smoothing applies to the supervised objective, not simclr");
    XFER_CHECK_USAGE(batch_size() >= 2, "--objective simclr needs --batch-size >= 2 (the other images are the negatives)");
  }
}

std::optional<AdvTrainSpec> parse_adv_train(const std::string& text) {
  if (text.empty()) return std::nullopt;
  const auto parts = split(text, ':');
  XFER_CHECK_USAGE(parts[0] == "pgd" && (parts.size() == 2 || parts.size() == 3),
                   "--adv-train: expected pgd:EPS or pgd:EPS:STEPS (e.g. pgd:0.1), got '", text, "'");
  AdvTrainSpec s;
  s.eps = parse_fraction(parts[1], "--adv-train eps");
  XFER_CHECK_USAGE(s.eps > 0 && s.eps <= 1, "--adv-train: eps must be in (0, 1], got '", parts[1], "'");
  if (parts.size() == 3) {
    s.steps = parse_integer(parts[2], "--adv-train steps");
    XFER_CHECK_USAGE(s.steps >= 1 && s.steps <= 1000, "--adv-train: steps must be in [1, 1000], got ", s.steps);
  }
  return s;
}

Json TrainOptions::to_json() const {
  Json j = {{"epochs", epochs()},
          {"batch_size", batch_size()},
          {"optimizer", optimizer()},
          {"lr", lr()},
          {"weight_decay", weight_decay()},
          {"momentum", momentum()},
          {"schedule", schedule()},
          {"warmup_epochs", warmup_epochs()},
          {"label_smoothing", label_smoothing()},
          {"crop_padding", augment().crop_padding},
          {"hflip", augment().hflip},
          {"seed", seed()}};
  // Only when set: recipes (and checkpoints) of plain runs keep their form.
  if (optimizer() == "sgd" && !nesterov()) j["nesterov"] = false;
  if (!keep_best()) j["keep_best"] = false;
  if (!adv_train().empty()) j["adv_train"] = adv_train();
  if (objective() != "supervised") {
    const auto& v = views();
    j["objective"] = objective();
    j["temperature"] = temperature();
    j["views"] = {{"min_scale", v.min_scale}, {"max_scale", v.max_scale}, {"max_ratio", v.max_ratio},
                  {"hflip", v.hflip},         {"contrast", v.contrast},   {"brightness", v.brightness}};
  }
  return j;
}

Json to_json(const EpochRecord& r) {
  const bool val = r.val_accuracy >= 0;
  return {{"epoch", r.epoch},
          {"train_loss", r.train_loss},
          {"train_accuracy", r.train_accuracy},
          {"val_loss", val ? Json(r.val_loss) : Json(nullptr)},
          {"val_accuracy", val ? Json(r.val_accuracy) : Json(nullptr)},
          {"lr", r.lr},
          {"seconds", r.seconds},
          {"images_per_second", r.images_per_second}};
}

EpochRecord epoch_record_from_json(const Json& j) {
  EpochRecord r;
  r.epoch = j.at("epoch").get<int64_t>();
  r.train_loss = j.at("train_loss").get<double>();
  r.train_accuracy = j.at("train_accuracy").get<double>();
  if (!j.at("val_accuracy").is_null()) {
    r.val_loss = j.at("val_loss").get<double>();
    r.val_accuracy = j.at("val_accuracy").get<double>();
  }
  r.lr = j.at("lr").get<double>();
  r.seconds = j.at("seconds").get<double>();
  r.images_per_second = j.at("images_per_second").get<double>();
  return r;
}

ContrastiveLoss nt_xent(const torch::Tensor& z1, const torch::Tensor& z2, double temperature) {
  XFER_CHECK(z1.dim() == 2 && z1.sizes() == z2.sizes() && z1.size(0) >= 1,
             "nt_xent: expected two [N, D] embeddings of the same shape, got ", z1.sizes(), " and ",
             z2.sizes());
  XFER_CHECK(temperature > 0, "nt_xent: temperature must be positive, got ", temperature);
  const int64_t n = z1.size(0);
  namespace F = torch::nn::functional;
  auto z = F::normalize(torch::cat({z1, z2}), F::NormalizeFuncOptions().dim(1));
  auto sim = torch::mm(z, z.t()) / temperature;
  // A view is not its own negative.
  auto self = torch::eye(2 * n, torch::TensorOptions().dtype(torch::kBool).device(z.device()));
  sim = sim.masked_fill(self, -std::numeric_limits<float>::infinity());
  auto ar = torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(z.device()));
  auto pair = torch::cat({ar + n, ar});
  ContrastiveLoss r;
  r.loss = F::cross_entropy(sim, pair);
  r.correct = sim.detach().argmax(1).eq(pair);
  return r;
}

namespace {
// The generator of step `step`'s views: a function of (seed, step) only, so a
// resumed or distributed run draws the same views.
at::Generator view_generator(uint64_t seed, uint64_t step) {
  Rng rng(seed * 0x9E3779B97F4A7C15ULL + 0x5157C1A5ULL);
  for (int i = 0; i < 2; ++i) rng.next();
  return at::detail::createCPUGenerator(rng.next() ^ (step * 0xBF58476D1CE4E5B9ULL + 1));
}
}  // namespace

namespace {
// Mean loss and accuracy over a dataset in eval mode without grad, in fixed
// batches; `batch_sums(batch, i)` gives one batch's summed loss and correct
// count. Distributed: each rank takes its share of the batches and the sums
// are all-reduced.
LossAccuracy evaluate_batches(models::ClassifierImpl& model, const data::Dataset& ds, int64_t batch_size,
                              const std::function<std::pair<double, int64_t>(const data::Batch&, int64_t)>& batch_sums) {
  LossAccuracy r;
  if (ds.size() == 0) return r;
  bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  data::Loader loader(ds, data::LoaderOptions{batch_size, false, false, 0, {}});
  loader.start_epoch(0);
  double loss_sum = 0;
  int64_t correct = 0;
  const auto [first, last] = dist::shard(loader.num_batches(), 1);
  for (int64_t i = first; i < last; ++i) {
    const auto [l, c] = batch_sums(loader.batch(i), i);
    loss_sum += l;
    correct += c;
  }
  if (dist::active()) {
    auto sums = torch::tensor({loss_sum, double(correct)}, torch::kDouble);
    dist::all_reduce_sum(sums);
    loss_sum = sums[0].item<double>();
    correct = static_cast<int64_t>(std::llround(sums[1].item<double>()));
  }
  r.loss = loss_sum / double(ds.size());
  r.accuracy = double(correct) / double(ds.size());
  model.train(was_training);
  return r;
}
}  // namespace

LossAccuracy evaluate_contrastive(models::ClassifierImpl& model, const data::Dataset& ds,
                                  const TrainOptions& options, int64_t batch_size, torch::Device device) {
  return evaluate_batches(model, ds, batch_size, [&](const data::Batch& b, int64_t i) -> std::pair<double, int64_t> {
    const int64_t n = b.images.size(0);
    if (n < 2) return {0.0, 0};  // a lone image has no negative
    auto gen = view_generator(options.seed() + 1000003, static_cast<uint64_t>(i));
    auto v1 = data::random_view(b.images, options.views(), gen);
    auto v2 = data::random_view(b.images, options.views(), gen);
    auto z = model.forward(torch::cat({v1, v2}).to(device));
    auto c = nt_xent(z.slice(0, 0, n), z.slice(0, n, 2 * n), options.temperature());
    return {c.loss.item<double>() * double(n), c.correct.slice(0, 0, n).sum().item<int64_t>()};
  });
}

std::string resume_thread_note(const io::Checkpoint& checkpoint) {
  const auto it = checkpoint.state.find("threads");
  if (it == checkpoint.state.end() || !it->is_number_integer()) return "";
  const auto then = it->get<int64_t>();
  const int64_t now = torch::get_num_threads();
  if (then == now) return "";
  return str_cat("note: the checkpoint was written with ", then, " threads and this run has ", now,
                 ": it continues correctly, but bit-identical to an uninterrupted run only with ",
                 then, " (--threads ", then, ")");
}

LossAccuracy evaluate_loss(models::ClassifierImpl& model, const data::Dataset& ds,
                           int64_t batch_size, torch::Device device) {
  return evaluate_batches(model, ds, batch_size, [&](const data::Batch& b, int64_t) -> std::pair<double, int64_t> {
    auto logits = model.forward(b.images.to(device));
    auto labels = b.labels.to(device);
    const double loss = torch::nn::functional::cross_entropy(
                            logits, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                            .item<double>();
    return {loss, logits.argmax(1).eq(labels).sum().item<int64_t>()};
  });
}

ParamGroups split_weight_decay(torch::nn::Module& model) {
  ParamGroups g;
  for (const auto& item : model.named_parameters(true)) {
    const auto& p = item.value();
    if (!p.requires_grad()) continue;
    // timm's rule: 1-d tensors (biases, norm scales), scalars and the ViT's
    // tokens and position embedding get no decay.
    if (!takes_weight_decay(item.key(), p)) {
      g.no_decay.push_back(p);
      g.no_decay_names.push_back(item.key());
    } else {
      g.decay.push_back(p);
      g.decay_names.push_back(item.key());
    }
  }
  return g;
}

namespace {

// The optimizer's state map is keyed by std::string in LibTorch 1.x and by
// void* in 2.x; this builds the key either way.
template <typename Map>
typename Map::key_type state_key(const torch::Tensor& p) {
  using Key = typename Map::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream os;
    os << p.unsafeGetTensorImpl();
    return os.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

std::string tensor_key(const char* kind, size_t g, size_t j, const char* what) {
  return str_cat("optim.", g, ".", j, ".", kind, what);
}

// Optimizer moments and step counts into the checkpoint.
void save_optimizer(torch::optim::Optimizer& opt, const std::string& kind, io::Checkpoint& c) {
  auto& state = opt.state();
  using Map = std::decay_t<decltype(state)>;
  Json steps = Json::array();
  for (size_t g = 0; g < opt.param_groups().size(); ++g) {
    const auto& params = opt.param_groups()[g].params();
    for (size_t j = 0; j < params.size(); ++j) {
      auto it = state.find(state_key<Map>(params[j]));
      if (it == state.end()) {
        steps.push_back(-1);
        continue;
      }
      if (kind == "adamw") {
        auto& st = static_cast<torch::optim::AdamWParamState&>(*it->second);
        steps.push_back(st.step());
        c.tensors.add(tensor_key("", g, j, "exp_avg"), st.exp_avg().detach().cpu().contiguous());
        c.tensors.add(tensor_key("", g, j, "exp_avg_sq"), st.exp_avg_sq().detach().cpu().contiguous());
      } else {
        auto& st = static_cast<torch::optim::SGDParamState&>(*it->second);
        steps.push_back(0);
        c.tensors.add(tensor_key("", g, j, "momentum_buffer"), st.momentum_buffer().detach().cpu().contiguous());
      }
    }
  }
  c.state["optimizer_steps"] = steps;
}

void load_optimizer(torch::optim::Optimizer& opt, const std::string& kind, const io::Checkpoint& c,
                    const std::string& what) {
  auto& state = opt.state();
  using Map = std::decay_t<decltype(state)>;
  const Json& steps = c.state.at("optimizer_steps");
  size_t k = 0;
  auto get = [&](const std::string& key, const torch::Tensor& like) {
    XFER_CHECK(c.tensors.contains(key), what, ": checkpoint lacks ", key);
    const auto& t = c.tensors.at(key);
    XFER_CHECK(t.sizes() == like.sizes(), what, ": checkpoint tensor ", key, " has shape ", t.sizes(),
               ", expected ", like.sizes());
    return t.to(like.device(), like.scalar_type()).clone();
  };
  for (size_t g = 0; g < opt.param_groups().size(); ++g) {
    const auto& params = opt.param_groups()[g].params();
    for (size_t j = 0; j < params.size(); ++j, ++k) {
      XFER_CHECK(k < steps.size(), what, ": checkpoint has state for fewer parameters than the model trains");
      int64_t step = steps[k].get<int64_t>();
      if (step < 0) continue;
      const auto& p = params[j];
      if (kind == "adamw") {
        auto st = std::make_unique<torch::optim::AdamWParamState>();
        st->step(step);
        st->exp_avg(get(tensor_key("", g, j, "exp_avg"), p));
        st->exp_avg_sq(get(tensor_key("", g, j, "exp_avg_sq"), p));
        state[state_key<Map>(p)] = std::move(st);
      } else {
        auto st = std::make_unique<torch::optim::SGDParamState>();
        st->momentum_buffer(get(tensor_key("", g, j, "momentum_buffer"), p));
        state[state_key<Map>(p)] = std::move(st);
      }
    }
  }
  XFER_CHECK(k == steps.size(), what, ": checkpoint has state for ", steps.size(),
             " parameters but the model trains ", k, " (a different strategy or model?)");
}

// The names of snapshot()'s tensors in its order (parameters, then buffers, as
// a state_dict names them). A checkpoint stores a model by name, so resuming
// into a model whose layers differ fails naming the first tensor that does not
// match, instead of matching tensors by position.
std::vector<std::string> snapshot_names(torch::nn::Module& m) {
  std::vector<std::string> n;
  for (const auto& p : m.named_parameters()) n.push_back(p.key());
  for (const auto& b : m.named_buffers()) n.push_back(b.key());
  std::set<std::string> unique(n.begin(), n.end());
  XFER_CHECK(unique.size() == n.size(),
             "training: the model has a parameter and a buffer of the same name");
  return n;
}

void put_snapshot(const std::vector<torch::Tensor>& s, const std::vector<std::string>& names,
                  const std::string& prefix, io::Checkpoint& c) {
  for (size_t i = 0; i < s.size(); ++i) {
    c.tensors.add(str_cat(prefix, "/", names.at(i)), s[i].detach().cpu().contiguous());
  }
}

void get_snapshot(std::vector<torch::Tensor>& s, const std::vector<std::string>& names,
                  const std::string& prefix, const io::Checkpoint& c, const std::string& what) {
  const std::string head = prefix + "/";
  const auto stored = std::count_if(c.tensors.tensors.begin(), c.tensors.tensors.end(),
                                    [&](const auto& t) { return t.first.rfind(head, 0) == 0; });
  for (size_t i = 0; i < s.size(); ++i) {
    const std::string key = head + names.at(i);
    XFER_CHECK(c.tensors.contains(key), what, ": checkpoint does not match the model (it lacks ",
               key, ")");
    const auto& t = c.tensors.at(key);
    XFER_CHECK(t.sizes() == s[i].sizes(), what, ": checkpoint does not match the model (", key,
               " has shape ", t.sizes(), ", the model ", s[i].sizes(), ")");
    s[i] = t.to(s[i].device(), s[i].scalar_type()).clone();
  }
  XFER_CHECK(static_cast<size_t>(stored) == s.size(), what,
             ": checkpoint does not match the model (", stored, " tensors under ", prefix,
             ", the model has ", s.size(), ")");
}

}  // namespace

Trainer::Trainer(TrainOptions options) : options_(std::move(options)) { options_.validate(); }

TrainResult Trainer::fit(models::ClassifierImpl& model, const data::Dataset& train,
                         const data::Dataset& val) {
  const auto& o = options_;
  XFER_CHECK(train.size() > 0, train.source, ": training set is empty");
  XFER_CHECK(train.num_classes() <= model.num_classes(), train.source, ": data has ",
             train.num_classes(), " classes but the model's head has ", model.num_classes());
  torch::Device device = parse_device(o.device());
  model.to(device);
  seed_everything(o.seed());

  std::vector<OptimGroup> groups = groups_;
  if (groups.empty()) {
    auto split = split_weight_decay(model);
    if (!split.decay.empty()) groups.push_back({"decay", split.decay, 1.0, o.weight_decay()});
    if (!split.no_decay.empty()) groups.push_back({"no_decay", split.no_decay, 1.0, 0.0});
  }
  groups.erase(std::remove_if(groups.begin(), groups.end(),
                              [](const OptimGroup& g) { return g.params.empty(); }),
               groups.end());
  XFER_CHECK(!groups.empty(), "training: the model has no trainable parameters");
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  for (const auto& g : groups) {
    if (o.optimizer() == "adamw") {
      param_groups.emplace_back(g.params, std::make_unique<torch::optim::AdamWOptions>(
                                              torch::optim::AdamWOptions(o.lr() * g.lr_scale)
                                                  .weight_decay(g.weight_decay)));
    } else {
      param_groups.emplace_back(
          g.params, std::make_unique<torch::optim::SGDOptions>(
                        torch::optim::SGDOptions(o.lr() * g.lr_scale)
                            .momentum(o.momentum())
                            .nesterov(o.nesterov() && o.momentum() > 0)
                            .weight_decay(g.weight_decay)));
    }
  }
  if (o.optimizer() == "adamw") {
    optimizer = std::make_unique<torch::optim::AdamW>(param_groups, torch::optim::AdamWOptions(o.lr()));
  } else {
    optimizer = std::make_unique<torch::optim::SGD>(param_groups, torch::optim::SGDOptions(o.lr()));
  }

  data::LoaderOptions lo;
  lo.batch_size = o.batch_size();
  lo.shuffle = true;
  // Dropping a ragged last batch keeps BatchNorm away from a batch of one.
  lo.drop_last = train.size() > o.batch_size();
  lo.seed = o.seed();
  lo.augment = o.augment();
  data::Loader loader(train, lo);
  const int64_t steps_per_epoch = loader.num_batches();
  ScheduleOptions so;
  so.kind = o.schedule();
  so.total_steps = steps_per_epoch * o.epochs();
  so.warmup_steps = static_cast<int64_t>(std::llround(o.warmup_epochs() * steps_per_epoch));

  TrainResult result;
  result.trainable_parameters = models::count_parameters(model, true);
  const auto names = snapshot_names(model);
  auto best = snapshot(model);
  auto last_good = best;
  auto t_start = Clock::now();
  double train_seconds = 0, prior_wall = 0, prior_epoch_seconds = 0;
  int64_t images_seen = 0, step = 0, first_epoch = 0, first_batch = 0;
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
  auto ce_options = torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(o.label_smoothing());
  const auto adv = parse_adv_train(o.adv_train());
  const bool ssl = o.objective() == "simclr";
  attack::AttackOptions adv_options;
  models::Classifier adv_model(nullptr);
  if (adv) {
    adv_options = attack::options_for("pgd", attack::AttackOptions().eps(adv->eps).steps(adv->steps).seed(o.seed()));
    adv_options.validate();
    adv_model = models::Classifier(std::dynamic_pointer_cast<models::ClassifierImpl>(model.shared_from_this()));
  }

  at::Generator gen = at::detail::getDefaultCPUGenerator();
  auto save = [&](int64_t epoch, int64_t batch, int64_t next_step, double epoch_seconds) {
    if (checkpoint_.dir.empty() || !dist::is_main()) return;
    io::Checkpoint c;
    c.state["context"] = checkpoint_.context;
    c.state["epoch"] = epoch;
    c.state["batch"] = batch;
    c.state["step"] = next_step;
    c.state["steps_per_epoch"] = steps_per_epoch;
    c.state["loss_sum"] = loss_sum;
    c.state["correct"] = correct;
    c.state["seen"] = seen;
    c.state["epoch_seconds"] = epoch_seconds;
    c.state["train_seconds"] = train_seconds;
    c.state["wall_seconds"] = prior_wall + seconds_since(t_start);
    c.state["images_seen"] = images_seen;
    c.state["best_epoch"] = result.best_epoch;
    c.state["best_score"] = result.best_val_accuracy;
    c.state["optimizer"] = o.optimizer();
    c.state["threads"] = torch::get_num_threads();
    Json h = Json::array();
    for (const auto& r : result.history) h.push_back(to_json(r));
    c.state["history"] = h;
    put_snapshot(snapshot(model), names, "model", c);
    put_snapshot(best, names, "best", c);
    put_snapshot(last_good, names, "last_good", c);
    save_optimizer(*optimizer, o.optimizer(), c);
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      c.tensors.add("rng.cpu", gen.get_state().contiguous());
    }
    if (device.is_cuda()) {
      // Dropout on a GPU draws from that device's generator: it resumes too.
      auto cuda_gen = at::globalContext().defaultGenerator(device);
      std::lock_guard<std::mutex> lock(cuda_gen.mutex());
      c.tensors.add("rng.cuda", cuda_gen.get_state().contiguous());
    }
    io::write_checkpoint(checkpoint_.dir, c);
  };

  if (resume_) {
    const auto& c = *resume_;
    const std::string what = io::checkpoint_file(checkpoint_.dir.empty() ? "." : checkpoint_.dir);
    try {
      XFER_CHECK(c.state.at("optimizer").get<std::string>() == o.optimizer(), what,
                 ": checkpoint was written with another optimizer");
      XFER_CHECK(c.state.at("steps_per_epoch").get<int64_t>() == steps_per_epoch, what,
                 ": checkpoint has ", c.state.at("steps_per_epoch").get<int64_t>(),
                 " steps per epoch, this run ", steps_per_epoch, " (different data or batch size)");
      auto current = snapshot(model);
      get_snapshot(current, names, "model", c, what);
      restore(model, current);
      get_snapshot(best, names, "best", c, what);
      get_snapshot(last_good, names, "last_good", c, what);
      load_optimizer(*optimizer, o.optimizer(), c, what);
      XFER_CHECK(c.tensors.contains("rng.cpu"), what, ": checkpoint lacks the RNG state");
      {
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(c.tensors.at("rng.cpu"));
      }
      if (device.is_cuda() && c.tensors.contains("rng.cuda")) {
        auto cuda_gen = at::globalContext().defaultGenerator(device);
        std::lock_guard<std::mutex> lock(cuda_gen.mutex());
        cuda_gen.set_state(c.tensors.at("rng.cuda"));
      }
      first_epoch = c.state.at("epoch").get<int64_t>();
      first_batch = c.state.at("batch").get<int64_t>();
      step = c.state.at("step").get<int64_t>();
      loss_sum = c.state.at("loss_sum").get<double>();
      correct = c.state.at("correct").get<int64_t>();
      seen = c.state.at("seen").get<int64_t>();
      prior_epoch_seconds = c.state.at("epoch_seconds").get<double>();
      train_seconds = c.state.at("train_seconds").get<double>();
      prior_wall = c.state.at("wall_seconds").get<double>();
      images_seen = c.state.at("images_seen").get<int64_t>();
      result.best_epoch = c.state.at("best_epoch").get<int64_t>();
      result.best_val_accuracy = c.state.at("best_score").get<double>();
      for (const auto& r : c.state.at("history")) result.history.push_back(epoch_record_from_json(r));
    } catch (const nlohmann::json::exception& e) {
      throw Error(str_cat(what, ": malformed checkpoint state (", e.what(), ")"));
    }
    XFER_CHECK(first_epoch >= 0 && first_epoch <= o.epochs() && first_batch >= 0 &&
                   first_batch < std::max<int64_t>(steps_per_epoch, 1),
               what, ": checkpoint position (epoch ", first_epoch, ", batch ", first_batch,
               ") is outside this run's ", o.epochs(), " epochs");
  }

  if (dist::active()) {
    // Every rank starts from rank 0's parameters and buffers (torch DDP does the same).
    std::vector<torch::Tensor> state;
    for (auto& p : model.parameters()) state.push_back(p);
    for (auto& b : model.buffers()) state.push_back(b);
    dist::broadcast(state);
  }
  bool stopped = false;  // on_step_ ended the run
  for (int64_t epoch = first_epoch; epoch < o.epochs(); ++epoch) {
    model.train();
    loader.start_epoch(epoch);
    const int64_t begin = epoch == first_epoch ? first_batch : 0;
    if (begin == 0) {
      loss_sum = 0;
      correct = seen = 0;
      prior_epoch_seconds = 0;
    }
    Progress progress(str_cat("epoch ", epoch + 1, "/", o.epochs()), steps_per_epoch);
    progress.advance(begin);
    const auto t_epoch = Clock::now();
    const double epoch_seconds_before = prior_epoch_seconds;
    double lr_now = o.lr();
    for (int64_t i = begin; i < steps_per_epoch; ++i, ++step) {
      lr_now = o.lr() * (lr_curve_ ? lr_curve_(step) : lr_factor(so, step));
      for (size_t g = 0; g < optimizer->param_groups().size(); ++g) {
        optimizer->param_groups()[g].options().set_lr(lr_now * groups[g].lr_scale);
      }
      // Every rank draws the same global batch (same permutation and
      // augmentation) and trains on its slice of rows: a run gives the same
      // batches whatever the number of processes, and resumes under any.
      auto batch = loader.batch(i);
      const int64_t global_n = batch.images.size(0);
      const auto [lo, hi] = dist::shard(global_n, 1);
      torch::Tensor x2;
      if (ssl) {
        // Both views of the whole global batch, then this rank's rows of each.
        auto gen = view_generator(o.seed(), static_cast<uint64_t>(step));
        auto v1 = data::random_view(batch.images, o.views(), gen);
        auto v2 = data::random_view(batch.images, o.views(), gen);
        batch.images = v1;
        x2 = v2.slice(0, lo, hi).to(device);
      }
      auto x = batch.images.slice(0, lo, hi).to(device);
      auto y = batch.labels.slice(0, lo, hi).to(device);
      if (adv && x.size(0) > 0) {
        // run_attack crafts in eval mode and restores train mode; seeded by the
        // step (and the rank: with the step alone every rank drew the same
        // random starts for its rows), so a resumed run crafts the same examples.
        const int64_t draw = step * dist::world_size() + dist::rank();
        x = attack::run_attack({adv_model}, x, y, adv_options, draw).adv.detach();
      }
      optimizer->zero_grad();
      const bool ddp = dist::active();
      // This rank's share of the global mean loss (and of the penalty, so it counts once).
      const double share = ddp ? double(x.size(0)) / double(global_n) : 1.0;
      torch::Tensor logits, total;
      double loss_value = 0, total_value = 0;
      int64_t batch_correct = 0;
      if (ssl) {
        // NT-Xent over the global batch: the other ranks' embeddings enter as
        // constants and this rank's carry the gradient, so the summed gradients
        // equal one process's (the loss is not scaled by the share).
        const int64_t m = x.size(0);
        auto z = m > 0 ? model.forward(torch::cat({x, x2})) : torch::Tensor();
        torch::Tensor z1 = m > 0 ? z.slice(0, 0, m) : torch::Tensor(), z2 = m > 0 ? z.slice(0, m, 2 * m) : torch::Tensor();
        if (ddp) {
          const int64_t d = model.num_classes();
          auto empty = torch::zeros({0, d});
          auto g1 = dist::all_gather_rows(m > 0 ? z1.detach().to(torch::kCPU).contiguous() : empty).to(device);
          auto g2 = dist::all_gather_rows(m > 0 ? z2.detach().to(torch::kCPU).contiguous() : empty).to(device);
          if (m > 0) {
            z1 = torch::cat({g1.slice(0, 0, lo), z1, g1.slice(0, hi, global_n)});
            z2 = torch::cat({g2.slice(0, 0, lo), z2, g2.slice(0, hi, global_n)});
          } else {
            z1 = g1, z2 = g2;
          }
        }
        auto c = nt_xent(z1, z2, o.temperature());
        loss_value = c.loss.item<double>();
        if (m > 0) total = c.loss;
        batch_correct = c.correct.slice(0, lo, hi).sum().item<int64_t>();
        // Counted over this rank's rows so that the all-reduced sums count each image once.
        total_value = loss_value * (ddp ? share : 1.0);
      } else if (x.size(0) > 0) {
        logits = model.forward(x);
        auto loss = torch::nn::functional::cross_entropy(logits, y, ce_options);
        loss_value = loss.item<double>();
        total = ddp ? loss * share : loss;
        batch_correct = logits.detach().argmax(1).eq(y).sum().item<int64_t>();
      }
      double penalty_value = 0;
      if (penalty_) {
        auto p = ddp ? penalty_() * share : penalty_();
        penalty_value = p.item<double>();
        total = total.defined() ? total + p : p;
      }
      if (ssl) {
        total_value += penalty_value;
      } else {
        total_value = total.defined() ? (penalty_ || ddp ? total.item<double>() : loss_value) : 0.0;
      }
      double batch_loss_sum = loss_value * double(x.size(0));
      int64_t batch_seen = x.size(0);
      if (ddp) {
        auto stats = torch::tensor({batch_loss_sum, double(batch_correct), double(batch_seen), total_value},
                                   torch::kDouble);
        dist::all_reduce_sum(stats);
        batch_loss_sum = stats[0].item<double>();
        batch_correct = static_cast<int64_t>(std::llround(stats[1].item<double>()));
        batch_seen = static_cast<int64_t>(std::llround(stats[2].item<double>()));
        total_value = stats[3].item<double>();
        loss_value = batch_loss_sum / double(std::max<int64_t>(batch_seen, 1));
      }
      if (!std::isfinite(total_value)) {
        restore(model, last_good);
        if (on_step_ && !on_step_({step, lr_now, total_value})) {
          stopped = true;
          break;
        }
        throw Error(str_cat("training diverged: loss is ", total_value, " at epoch ", epoch + 1,
                            " step ", i + 1, " (try a lower --lr); weights restored to the end of epoch ",
                            epoch));
      }
      if (total.defined() && total.requires_grad()) total.backward();
      if (ddp) {
        // Sum the ranks' gradients (each already weighted by its share of the batch).
        std::vector<torch::Tensor> grads;
        for (auto& g : optimizer->param_groups()) {
          for (auto& p : g.params()) {
            if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
            grads.push_back(p.mutable_grad());
          }
        }
        dist::all_reduce_sum(grads);
      }
      optimizer->step();
      loss_sum += batch_loss_sum;
      correct += batch_correct;
      seen += batch_seen;
      progress.advance(1, str_cat("loss ", std::round(loss_value * 1000) / 1000));
      if (on_step_ && !on_step_({step, lr_now, total_value})) {
        stopped = true;
        break;
      }
      if (checkpoint_.every_steps > 0 && (step + 1) % checkpoint_.every_steps == 0 &&
          i + 1 < steps_per_epoch) {
        save(epoch, i + 1, step + 1, epoch_seconds_before + seconds_since(t_epoch));
      }
    }
    progress.done();
    if (stopped) break;
    double epoch_train_seconds = epoch_seconds_before + seconds_since(t_epoch);
    train_seconds += epoch_train_seconds;
    images_seen += seen;

    EpochRecord rec;
    rec.epoch = epoch + 1;
    rec.train_loss = loss_sum / double(std::max<int64_t>(seen, 1));
    rec.train_accuracy = double(correct) / double(std::max<int64_t>(seen, 1));
    rec.lr = lr_now;
    rec.images_per_second = double(seen) / std::max(epoch_train_seconds, 1e-9);
    if (val.size() > 0) {
      auto v = ssl ? evaluate_contrastive(model, val, o, 256, device) : evaluate_loss(model, val, 256, device);
      rec.val_loss = v.loss;
      rec.val_accuracy = v.accuracy;
    }
    rec.seconds = epoch_seconds_before + seconds_since(t_epoch);
    result.history.push_back(rec);
    last_good = snapshot(model);
    // Without validation the last epoch is the one kept.
    double score = val.size() > 0 ? rec.val_accuracy : double(epoch);
    if (score > result.best_val_accuracy || result.best_epoch < 0) {
      result.best_val_accuracy = score;
      result.best_epoch = epoch + 1;
      best = last_good;
    }
    loss_sum = 0;
    correct = seen = 0;
    save(epoch + 1, 0, step, 0.0);
    if (on_epoch_) on_epoch_(rec);
  }
  if (val.size() == 0) result.best_val_accuracy = -1;
  result.world_size = dist::world_size();
  if (dist::active()) {
    // The replicas must be identical: compare with rank 0's parameters.
    std::vector<torch::Tensor> mine, root;
    for (auto& p : model.parameters()) {
      mine.push_back(p.detach());
      root.push_back(p.detach().clone());
    }
    dist::broadcast(root);
    double diff = 0;
    for (size_t k = 0; k < mine.size(); ++k) {
      if (mine[k].numel() > 0) diff = std::max(diff, (mine[k] - root[k]).abs().max().item<double>());
    }
    auto worst = torch::tensor({diff}, torch::kDouble);
    // The sum of non-negative differences is 0 exactly when every rank matched.
    dist::all_reduce_sum(worst);
    result.rank_max_param_diff = worst.item<double>();
    XFER_CHECK(result.rank_max_param_diff == 0, "data-parallel replicas diverged: parameters differ from rank 0's by up to ",
               result.rank_max_param_diff);
  }
  if (o.keep_best() && val.size() > 0) restore(model, best);
  if (!o.keep_best()) {
    // The last epoch's weights are kept: report their accuracy, not the best seen.
    result.best_epoch = o.epochs();
    if (val.size() > 0 && !result.history.empty()) {
      result.best_val_accuracy = result.history.back().val_accuracy;
    }
  }
  model.eval();
  result.wall_seconds = prior_wall + seconds_since(t_start);
  result.images_per_second = double(images_seen) / std::max(train_seconds, 1e-9);
  return result;
}

void LrFindOptions::validate() const {
  XFER_CHECK_USAGE(std::isfinite(start_lr()) && start_lr() > 0 && std::isfinite(end_lr()) &&
                       end_lr() > start_lr(),
                   "--lr-find-range: expected 0 < START < END, got ", start_lr(), ",", end_lr());
  XFER_CHECK_USAGE(steps() >= 2 && steps() <= 100000,
                   "--lr-find-steps must be in [2, 100000], got ", steps());
  XFER_CHECK_USAGE(smoothing() < 1, "lr-find smoothing must be below 1, got ", smoothing());
  XFER_CHECK_USAGE(divergence() > 1, "lr-find divergence must be > 1, got ", divergence());
}

double LrFindOptions::beta() const {
  return smoothing() >= 0 ? smoothing() : std::max(0.0, 1.0 - 10.0 / double(steps()));
}

Json LrFindOptions::to_json() const {
  return {{"start_lr", start_lr()},
          {"end_lr", end_lr()},
          {"steps", steps()},
          {"smoothing", beta()},
          {"divergence", divergence()}};
}

void read_lr_curve(LrFindResult& r) {
  XFER_CHECK(r.lr.size() == r.smoothed.size(), "lr-find: curve of ", r.lr.size(), " rates and ",
             r.smoothed.size(), " losses");
  // The point that tripped the divergence test is past the useful range.
  XFER_CHECK(r.stopped_by.empty() || r.stopped_by == "divergence" || r.stopped_by == "non-finite",
             "lr-find: unknown stop reason '", r.stopped_by, "'");
  const size_t n = r.stopped_by == "divergence" && r.smoothed.size() > 1 ? r.smoothed.size() - 1
                                                                         : r.smoothed.size();
  r.min_loss_lr = r.steepest_lr = r.valley_lr = 0;
  if (n == 0) return;
  for (size_t i = 0; i < r.lr.size(); ++i) {
    XFER_CHECK(r.lr[i] > 0 && (i == 0 || r.lr[i] > r.lr[i - 1]),
               "lr-find: rates must be positive and increasing");
  }
  const auto& y = r.smoothed;
  size_t lo = 0;
  for (size_t i = 1; i < n; ++i)
    if (y[i] < y[lo]) lo = i;
  r.min_loss_lr = r.lr[lo];
  size_t steep = 0;
  double best_slope = std::numeric_limits<double>::infinity();
  for (size_t i = 1; i < n; ++i) {
    const double slope = (y[i] - y[i - 1]) / (std::log(r.lr[i]) - std::log(r.lr[i - 1]));
    if (slope < best_slope) best_slope = slope, steep = i;
  }
  r.steepest_lr = r.lr[steep];
  // The valley: the last fall into the minimum, found walking back from it to the last point
  // still above a tenth of the way down from the plateau (the median of the curve's first
  // tenth: a noisy first batch or an early dip does not move it); its middle in log(lr).
  std::vector<double> head(y.begin(), y.begin() + std::max<size_t>(1, n / 10));
  std::nth_element(head.begin(), head.begin() + head.size() / 2, head.end());
  const double above = y[lo] + 0.9 * (head[head.size() / 2] - y[lo]);
  size_t start = lo;
  while (start > 0 && y[start] <= above) --start;
  r.valley_lr = std::sqrt(r.lr[start] * r.lr[lo]);
}

Json LrFindResult::to_json() const {
  return {{"options", options.to_json()},
          {"lr", lr},
          {"loss", loss},
          {"smoothed", smoothed},
          {"diverged", diverged()},
          {"stopped_by", stopped_by.empty() ? Json(nullptr) : Json(stopped_by)},
          {"suggested_lr", valley_lr},
          {"valley_lr", valley_lr},
          {"steepest_lr", steepest_lr},
          {"min_loss_lr", min_loss_lr}};
}

std::string LrFindResult::text(int64_t rows) const {
  std::ostringstream out;
  out << "lr-find: " << lr.size() << " steps from " << options.start_lr() << " to "
      << (lr.empty() ? options.start_lr() : lr.back())
      << (stopped_by == "divergence"   ? " (stopped: the loss diverged)"
          : stopped_by == "non-finite" ? " (stopped: the loss was not finite)"
                                       : "")
      << "\n";
  out << "  lr          loss      smoothed\n";
  const size_t n = lr.size(), want = size_t(std::max<int64_t>(rows, 1));
  const size_t stride = std::max<size_t>(1, (n + want - 1) / want);
  char line[160];
  auto row = [&](size_t i) {
    std::snprintf(line, sizeof line, "  %-10.3g  %-8.4g  %.4g\n", lr[i], loss[i], smoothed[i]);
    out << line;
  };
  // Every stride-th point, and the last one (where the test ended) in any case.
  for (size_t i = 0; i < n; i += stride) row(i);
  if (n > 0 && (n - 1) % stride != 0) row(n - 1);
  std::snprintf(line, sizeof line,
                "suggested lr %.3g (valley); steepest %.3g; minimum %.3g (/10: %.3g)\n", valley_lr,
                steepest_lr, min_loss_lr, min_loss_lr / 10);
  out << line;
  return out.str();
}

namespace {
constexpr double kLrFindLossFloor = 0.05;
}  // namespace

LrFindResult Trainer::lr_find(models::ClassifierImpl& model, const data::Dataset& train,
                              const LrFindOptions& options) const {
  options.validate();
  XFER_CHECK_USAGE(!dist::active(),
                   "--lr-find runs in one process, not under a distributed launch");
  Trainer t(options_);
  t.groups_ = groups_;
  t.penalty_ = penalty_;
  const int64_t n = options.steps();
  // At least one step an epoch, so `steps` epochs hold the whole test; no warmup, no best-epoch
  // restore.
  t.options_.lr(options.start_lr()).epochs(n).warmup_epochs(0).keep_best(false);
  const double log_ratio = std::log(options.end_lr() / options.start_lr());
  t.lr_curve_ = [log_ratio, n](int64_t s) {
    return std::exp(log_ratio * double(s) / double(n - 1));
  };
  LrFindResult r;
  r.options = options;
  const double beta = options.beta();
  // The test arms once the average spans its own window (1 / (1 - beta) steps,
  // a tenth of the test by default, at most a quarter): before, the "average"
  // is a batch or two, and one noisy batch read as divergence at the first rate.
  const size_t armed = static_cast<size_t>(std::clamp<double>(
      std::ceil(1 / std::max(1 - beta, 1e-9)), 2.0, std::max(2.0, double(n) / 4)));
  double avg = 0, lowest = std::numeric_limits<double>::infinity();
  t.on_step_ = [&](const StepRecord& s) {
    if (!std::isfinite(s.loss)) {
      r.stopped_by = "non-finite";
      return false;
    }
    avg = beta * avg + (1 - beta) * s.loss;
    const double smooth = avg / (1 - std::pow(beta, double(r.lr.size() + 1)));
    r.lr.push_back(s.lr);
    r.loss.push_back(s.loss);
    r.smoothed.push_back(smooth);
    lowest = std::min(lowest, smooth);
    // A minimum near zero (a head already fitted by the L-BFGS probe) is
    // floored: there, batch noise alone is several times the minimum, and the
    // test stopped "diverged" at the first rate.
    if (r.lr.size() >= armed &&
        smooth > options.divergence() * std::max(lowest, kLrFindLossFloor)) {
      r.stopped_by = "divergence";
      return false;
    }
    return static_cast<int64_t>(r.lr.size()) < n;
  };
  const auto saved = snapshot(model);
  const bool was_training = model.is_training();
  try {
    t.fit(model, train, data::Dataset());
  } catch (...) {
    restore(model, saved);
    model.train(was_training);
    throw;
  }
  restore(model, saved);
  model.train(was_training);
  // A loss is measured before its step's update: diverged within two steps, there is no curve.
  XFER_CHECK(!(r.diverged() && r.lr.size() < 3),
             "lr-find: the loss diverged within the first steps from lr ", options.start_lr(),
             " (lower the start of --lr-find-range)");
  read_lr_curve(r);
  return r;
}

namespace {

// The fields of two recipes that differ, for the --resume error.
std::string recipe_diff(const Json& saved, const Json& now) {
  std::string out;
  for (auto it = saved.begin(); it != saved.end(); ++it) {
    Json other = now.contains(it.key()) ? now[it.key()] : Json(nullptr);
    if (other != it.value()) {
      out += str_cat(out.empty() ? "" : ", ", it.key(), " ", other.dump(), " (checkpoint ",
                     it.value().dump(), ")");
    }
  }
  for (auto it = now.begin(); it != now.end(); ++it) {
    if (!saved.contains(it.key())) out += str_cat(out.empty() ? "" : ", ", it.key(), " is new");
  }
  return out;
}

// checkpoint.safetensors or a temporary of it left by a kill inside write_file_atomic.
bool is_checkpoint_entry(const std::filesystem::path& p) {
  const std::string name = p.filename().string();
  const std::string file = std::filesystem::path(io::checkpoint_file(".")).filename().string();
  return name == file || name.rfind(file + ".tmp-", 0) == 0;
}

// The first entry of `dir` that is not a checkpoint file ("" if none or no such
// directory). A checkpoint directory is removed after a successful run, so xfer
// only writes into one that holds nothing else.
std::string foreign_entry(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return "";
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (!is_checkpoint_entry(e.path())) return e.path().filename().string();
  }
  return "";
}

// Whether one of the two paths is the other or lies inside it.
bool nested(const std::string& a, const std::string& b) {
  std::error_code ec;
  const auto pa = std::filesystem::weakly_canonical(std::filesystem::absolute(a, ec), ec);
  const auto pb = std::filesystem::weakly_canonical(std::filesystem::absolute(b, ec), ec);
  auto within = [](const std::filesystem::path& inner, const std::filesystem::path& outer) {
    auto i = inner.begin();
    for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
      if (o->empty()) continue;  // a trailing separator
      if (i == inner.end() || *i != *o) return false;
    }
    return true;
  };
  return within(pa, pb) || within(pb, pa);
}

}  // namespace

void remove_checkpoint_dir(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return;
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (is_checkpoint_entry(e.path())) files.push_back(e.path());
  }
  for (const auto& f : files) std::filesystem::remove(f, ec);
  std::filesystem::remove(dir, ec);  // only if nothing else is left in it
}

std::string prepare_checkpoint_dir(const std::string& out, const std::string& dir,
                                   const std::string& resume, bool enabled, Overwrite overwrite) {
  namespace fs = std::filesystem;
  const std::string ckpt = !resume.empty() ? resume : !dir.empty() ? dir : out + ".ckpt";
  const std::string flag = !resume.empty() ? "--resume " + resume
                           : !dir.empty()  ? "--checkpoint-dir " + dir
                                           : ckpt;
  std::error_code ec;
  if (!resume.empty()) {
    XFER_CHECK_USAGE(fs::is_directory(resume, ec), "--resume ", resume, ": no such checkpoint directory");
  }
  if (!resume.empty() || enabled) {
    XFER_CHECK_USAGE(!nested(ckpt, out), flag,
                     ": the checkpoint directory must not be, contain or lie inside --out ", out);
  }
  if (!resume.empty()) {
    const std::string other = foreign_entry(resume);
    XFER_CHECK_USAGE(io::has_checkpoint(resume) || other.empty(), "--resume ", resume,
                     ": holds no xfer checkpoint (it holds ", other,
                     "); name the directory a run wrote its ",
                     "checkpoint to (OUT.ckpt unless --checkpoint-dir)");
  } else if (enabled) {
    const std::string other = foreign_entry(ckpt);
    XFER_CHECK_USAGE(other.empty(), flag, ": holds ", other,
                     "; a checkpoint directory must be new or hold only a checkpoint (it is "
                     "removed after the run)");
    if (io::has_checkpoint(ckpt)) {
      XFER_CHECK_USAGE(overwrite == Overwrite::kYes, ckpt,
                       ": holds the checkpoint of an interrupted run; pass --resume ", ckpt,
                       " to continue it, or --force to start over");
      remove_checkpoint_dir(ckpt);
    }
  }
  if (resume.empty() || !fs::exists(out, ec)) check_output_path(out, overwrite);
  return ckpt;
}

std::optional<io::Checkpoint> open_resume(const std::string& resume, const Json& recipe,
                                          const std::string& command) {
  if (resume.empty() || !io::has_checkpoint(resume)) return std::nullopt;
  auto ckpt = io::read_checkpoint(resume);
  const Json& ctx = ckpt.state["context"];
  XFER_CHECK(ctx.is_object() && ctx.contains("recipe") && ctx.contains("phase") &&
                 ctx["recipe"].is_object() && ctx["recipe"].value("command", "") == command,
             io::checkpoint_file(resume), ": not a checkpoint of xfer ", command);
  std::string diff = recipe_diff(ctx["recipe"], recipe);
  XFER_CHECK_USAGE(diff.empty(), "--resume ", resume, ": the checkpoint is of a different recipe: ", diff);
  return ckpt;
}

io::ModelCard write_output(const std::string& out, models::ClassifierImpl& model,
                           const io::ModelConfig& config, io::ModelCard card, Overwrite overwrite,
                           const std::string& ckpt_dir, bool keep_checkpoint,
                           const std::vector<std::pair<std::string, std::string>>& extra_files) {
  io::ModelCard written;
  if (dist::is_main()) written = io::save_model_dir(out, model, config, std::move(card), overwrite, extra_files);
  dist::barrier();
  if (!dist::is_main()) written = io::load_model_dir(out).card;
  if (!ckpt_dir.empty() && !keep_checkpoint && dist::is_main()) remove_checkpoint_dir(ckpt_dir);
  return written;
}

std::optional<io::ModelCard> finished_output(const std::string& out, const Json& recipe,
                                             const std::string& resume, bool keep_checkpoint,
                                             const std::vector<std::string>& ignore) {
  std::error_code ec;
  if (!std::filesystem::exists(out, ec)) return std::nullopt;
  auto done = io::load_model_dir(out);
  Json done_recipe = done.card.recipe;
  for (const auto& k : ignore) done_recipe.erase(k);
  XFER_CHECK_USAGE(done_recipe == recipe, out, ": exists and is not the output of this checkpoint's run");
  if (!keep_checkpoint) remove_checkpoint_dir(resume);
  return done.card;
}

}  // namespace xfer::train
