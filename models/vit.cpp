#include "models/vit.h"

#include <fmt/format.h>

#include "util/error.h"

namespace tunekit::models {

ViTImpl::ViTImpl(ViTOptions options_) : options(std::move(options_)) { reset(); }

int64_t ViTImpl::num_patches() const {
  int64_t side = options.image_size() / options.patch();
  return side * side;
}

void ViTImpl::reset() {
  const auto& o = options;
  if (o.patch() <= 0 || o.image_size() % o.patch() != 0)
    throw Error(fmt::format("vit: image_size {} is not a multiple of patch {}", o.image_size(),
                            o.patch()));
  patch_embed = register_module(
      "patch_embed",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(o.channels(), o.dim(), o.patch()).stride(o.patch())));
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, o.dim()}));
  pos_embed = register_parameter("pos_embed", torch::randn({1, num_patches() + 1, o.dim()}) * 0.02);
  AttentionVariant variant = o.attention();
  if (variant.max_seq_len <= 0) variant.max_seq_len = num_patches() + 1;
  auto list = register_module("blocks", std::make_shared<torch::nn::Module>());
  blocks.clear();
  for (int64_t i = 0; i < o.depth(); ++i)
    blocks.push_back(list->register_module(
        std::to_string(i),
        Block(BlockOptions(o.dim(), o.heads())
                  .mlp_ratio(o.mlp_ratio())
                  .dropout(o.dropout())
                  .attention(variant)
                  .post_attn_norm(o.post_attn_norm()))));
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim()})));
  head = register_module("head", Linear(o.dim(), o.num_classes()));
}

torch::Tensor ViTImpl::forward(const torch::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != options.channels() || x.size(2) != options.image_size() ||
      x.size(3) != options.image_size())
    throw Error(fmt::format("vit: expected input [B, {}, {}, {}], got {}", options.channels(),
                            options.image_size(), options.image_size(), c10::str(x.sizes())));
  auto h = patch_embed(x).flatten(2).transpose(1, 2);
  h = torch::cat({cls_token.expand({h.size(0), -1, -1}), h}, 1) + pos_embed;
  for (auto& b : blocks) h = b(h);
  return head(norm(h).select(1, 0));
}

torch::jit::Module ViTImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("ViT");
  const int64_t p = options.patch();
  auto patch = unit.module("PatchEmbed");  // patch_embed.weight / .bias, as the eager Conv2d
  patch.register_parameter("weight", patch_embed->weight.detach().clone(), false);
  patch.register_parameter("bias", patch_embed->bias.detach().clone(), false);
  patch.define(fmt::format("def forward(self, x: Tensor) -> Tensor:\n"
                           "    return torch.conv2d(x, self.weight, self.bias, [{p}, {p}])\n",
                           fmt::arg("p", p)));
  m.register_module("patch_embed", patch);
  m.register_parameter("cls_token", cls_token.detach().clone(), false);
  m.register_parameter("pos_embed", pos_embed.detach().clone(), false);
  std::string calls = register_block_scripts(m, blocks, unit, "");
  m.register_module("norm", layer_norm_script(unit, norm));
  m.register_module("head", head->to_script(unit));
  m.define(fmt::format(R"(
def forward(self, x: Tensor) -> Tensor:
    h = self.patch_embed.forward(x).flatten(2).transpose(1, 2)
    h = torch.cat([self.cls_token.expand(h.size(0), -1, -1), h], 1) + self.pos_embed
{calls}    return self.head.forward(self.norm.forward(h).select(1, 0))
)",
                       fmt::arg("calls", calls)));
  return m;
}

double ViTImpl::flops_per_sample() const {
  const double d = options.dim(), n = num_patches() + 1;
  const double patch_in = options.channels() * options.patch() * options.patch();
  return 2 * num_patches() * patch_in * d  // patch embedding
         + options.depth() * block_flops(BlockOptions(options.dim(), options.heads()).mlp_ratio(options.mlp_ratio()).attention(options.attention()), n) + 2 * d * options.num_classes();
}

std::string ViTImpl::describe() const {
  const auto& o = options;
  const std::string attn = describe_attention(o.attention(), o.post_attn_norm());
  return fmt::format("ViT(image {}x{}x{}, patch {}, dim {}, depth {}, heads {}, mlp x{}, classes {}; attention {})",
                     o.channels(), o.image_size(), o.image_size(), o.patch(), o.dim(), o.depth(), o.heads(),
                     o.mlp_ratio(), o.num_classes(), attn);
}

}  // namespace tunekit::models
