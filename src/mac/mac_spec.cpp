// The MAC spec grammar: parsing, validation and canonical printing (docs/mac.md, section 1).
#include <string>
#include <utility>
#include <vector>

#include "../format/text.h"
#include "mpsim/mac.h"
#include "src/mac/block_dot.h"

namespace mpsim {

namespace {

[[noreturn]] void fail(std::string_view item, const std::string& why) {
  throw MacSpecError("MAC item '" + std::string(item) + "': " + why);
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::vector<std::string_view> split_items(std::string_view text) {
  std::vector<std::string_view> items;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(text[i])) ++i;
    const std::size_t start = i;
    while (i < text.size() && !is_space(text[i])) ++i;
    if (i > start) items.push_back(text.substr(start, i - start));
  }
  return items;
}

enum class Role { input, product, accumulator, output };

std::string item_text(std::string_view key, const Format& f) { return std::string(key) + "=" + f.to_string(); }

// Why a format cannot take this role in a MAC, or nullptr if it can. (Returns text rather than
// throwing so that validate(), which dot_ref runs on every call, builds no strings when the
// spec is valid.)
const char* why_invalid(const Format& f, Role role) {
  const Rounding& r = f.rounding();
  if (r.mode == RoundMode::hyst) return "hysteresis rounding applies to weight updates in the optimizer, not to a MAC";
  if (f.kind() == FormatKind::integer && f.int_spec().perchannel) {
    return "per-channel integer formats take their scale from a layer; a MAC spec needs a fixed scale";
  }
  if (role == Role::input && r.stochastic()) {
    return "multiplier inputs are quantized deterministically (each operand element once, whatever output uses it); "
           "stochastic rounding of operands belongs to the layer's operand quantizer";
  }
  if (role == Role::accumulator && f.kind() == FormatKind::floating && !f.float_spec().has_zero) {
    return "an accumulator starts from zero, and this format has no zero";
  }
  return nullptr;
}

void check_format(std::string_view key, const Format& f, Role role) {
  if (const char* why = why_invalid(f, role)) fail(item_text(key, f), why);
}

Format parse_format_item(std::string_view item, std::string_view value, Role role) {
  // Block formats are recognised by their spelling, so that the message can say what is
  // wrong, whatever Format::parse says about them. (Inputs are dispatched before this.)
  if (detail::spelled_as_block_format(value)) {
    fail(item, "a block format can only be a multiplier input (in=, a=, b=), not a product, accumulator or output format");
  }
  Format f;
  try {
    f = Format::parse(value);
  } catch (const FormatError& e) {
    fail(item, e.what());
  }
  if (const char* why = why_invalid(f, role)) fail(item, why);
  return f;
}

BlockFormat parse_block_item(std::string_view item, std::string_view value) {
  try {
    return BlockFormat::parse(value);
  } catch (const FormatError& e) {
    fail(item, e.what());
  }
}

// Why a block format cannot be a multiplier input, or nullptr.
const char* why_invalid_block(const BlockFormat& f) {
  if (f.rounding().stochastic() || f.rounding().mode == RoundMode::hyst) {
    return "multiplier inputs are quantized deterministically (each operand block once, whatever output uses it); "
           "stochastic rounding of operands belongs to the layer's operand quantizer";
  }
  return nullptr;
}

// `bacc=auto`, `bacc=W` or `bacc=W:wrap` (W in 2 .. 126).
void parse_block_acc(std::string_view item, const std::string& lower, int& bits, bool& wrap) {
  std::string w = lower;
  wrap = false;
  if (const std::size_t colon = w.find(':'); colon != std::string::npos) {
    if (w.substr(colon + 1) != "wrap") fail(item, "the only option of bacc= is ':wrap' (two's-complement wrap-around)");
    wrap = true;
    w = w.substr(0, colon);
  }
  if (w == "auto") {
    if (wrap) fail(item, "bacc=auto cannot overflow, so ':wrap' has no meaning");
    bits = 0;
    return;
  }
  if (!detail::is_digits(w) || w.size() > 3) fail(item, "expected auto or a width in bits, e.g. bacc=24 or bacc=24:wrap");
  bits = std::stoi(w);
  if (bits < 2 || bits > BlockMac::kMaxBits) {
    fail(item, "the block accumulator width must be 2 .. " + std::to_string(BlockMac::kMaxBits) + " bits");
  }
}

std::string block_acc_text(const BlockMac& b) {
  return b.acc_bits == 0 ? "auto" : std::to_string(b.acc_bits) + (b.wrap ? ":wrap" : "");
}

}  // namespace

MacOrder parse_mac_order(std::string_view text) {
  const std::string t = detail::lowercase(text);
  const std::string item = "order=" + std::string(text);
  if (t == "seq") return {MacOrderKind::seq, 0};
  if (t == "kahan") return {MacOrderKind::kahan, 0};
  struct Prefix {
    const char* name;
    MacOrderKind kind;
  };
  // "ftree" before "tree" is irrelevant for prefix matching but keeps the list readable.
  for (const Prefix p : {Prefix{"chunk", MacOrderKind::chunk}, Prefix{"ftree", MacOrderKind::ftree}, Prefix{"tree", MacOrderKind::tree}}) {
    const std::string_view name = p.name;
    if (t.rfind(name, 0) != 0) continue;
    const std::string digits = t.substr(name.size());
    if (digits.empty()) fail(item, "'" + std::string(name) + "' needs a group size, e.g. " + std::string(name) + "64");
    if (!detail::is_digits(digits) || digits.size() > 9) {
      fail(item, "the group size must be a decimal number of at most 9 digits");
    }
    const unsigned long n = std::stoul(digits);
    if (n == 0) fail(item, "the group size must be at least 1");
    return {p.kind, static_cast<std::uint32_t>(n)};
  }
  fail(item, "unknown order (expected seq, chunkN, treeN, ftreeN or kahan)");
}

std::string to_string(const MacOrder& o) {
  switch (o.kind) {
    case MacOrderKind::seq: return "seq";
    case MacOrderKind::kahan: return "kahan";
    case MacOrderKind::chunk: return "chunk" + std::to_string(o.n);
    case MacOrderKind::tree: return "tree" + std::to_string(o.n);
    case MacOrderKind::ftree: return "ftree" + std::to_string(o.n);
  }
  return "?";
}

MacSpec MacSpec::parse(std::string_view text) {
  MacSpec s;
  bool seen_a = false, seen_b = false, seen_prod = false, seen_fused = false, seen_acc = false, seen_order = false,
       seen_outer = false, seen_out = false, seen_qfp32 = false, seen_bacc = false;
  // Block-format inputs as given, and the first item that names one / that does not.
  std::optional<BlockFormat> block_a, block_b;
  std::string block_item, scalar_input_item, bacc_item;
  std::string scalar_mac_item;  // the first prod=, acc= or order= item (not for block inputs)
  int bacc_bits = 0;
  bool bacc_wrap = false;
  const auto input = [&](std::string_view item, std::string_view value, Format& f, std::optional<BlockFormat>& bf) {
    if (detail::spelled_as_block_format(value)) {
      bf = parse_block_item(item, value);
      if (const char* why = why_invalid_block(*bf)) fail(item, why);
      if (block_item.empty()) block_item = std::string(item);
      f = bf->element_format();
    } else {
      f = parse_format_item(item, value, Role::input);
      if (scalar_input_item.empty()) scalar_input_item = std::string(item);
    }
  };
  std::string outer_item;
  std::string mac_only_item;  // the first prod=, acc=, order= or outer= item (not for qfp32)
  const auto note_mac_only = [&](std::string_view item) {
    if (mac_only_item.empty()) mac_only_item = std::string(item);
  };
  const auto once = [](std::string_view item, bool& seen, std::string_view what) {
    if (seen) fail(item, std::string(what) + " is given more than once");
    seen = true;
  };
  for (const std::string_view item : split_items(text)) {
    const std::size_t eq = item.find('=');
    const std::string key = detail::lowercase(item.substr(0, eq));
    if (eq == std::string_view::npos) {
      if (key == "fused") {
        once(item, seen_fused, "fused");
        s.fused = true;
        continue;
      }
      if (key == "qfp32") {
        once(item, seen_qfp32, "qfp32");
        s.qfp32 = true;
        continue;
      }
      fail(item, "expected key=value, 'fused' or 'qfp32' (keys: in, a, b, prod, acc, order, outer, out)");
    }
    if (key == "qfp32") fail(item, "'qfp32' takes no value");
    const std::string_view value = item.substr(eq + 1);
    if (key == "fused") fail(item, "'fused' takes no value");
    if (value.empty()) fail(item, "missing value after '='");
    const std::string lower = detail::lowercase(value);
    if (key == "in") {
      if (seen_a || seen_b) fail(item, "the input format is given more than once (in= sets both a= and b=)");
      seen_a = seen_b = true;
      input(item, value, s.a, block_a);
      s.b = s.a;
      block_b = block_a;
    } else if (key == "a") {
      once(item, seen_a, "the input format a (in= sets it too)");
      input(item, value, s.a, block_a);
    } else if (key == "b") {
      once(item, seen_b, "the input format b (in= sets it too)");
      input(item, value, s.b, block_b);
    } else if (key == "bacc") {
      once(item, seen_bacc, "bacc=");
      bacc_item = std::string(item);
      parse_block_acc(item, lower, bacc_bits, bacc_wrap);
    } else if (key == "prod") {
      note_mac_only(item);
      if (scalar_mac_item.empty()) scalar_mac_item = std::string(item);
      once(item, seen_prod, "prod=");
      s.prod = lower == "exact" ? std::nullopt : std::optional<Format>(parse_format_item(item, value, Role::product));
    } else if (key == "acc") {
      note_mac_only(item);
      if (scalar_mac_item.empty()) scalar_mac_item = std::string(item);
      once(item, seen_acc, "acc=");
      s.acc = lower == "exact" ? std::nullopt : std::optional<Format>(parse_format_item(item, value, Role::accumulator));
    } else if (key == "order") {
      note_mac_only(item);
      if (scalar_mac_item.empty()) scalar_mac_item = std::string(item);
      once(item, seen_order, "order=");
      s.order = parse_mac_order(value);
    } else if (key == "outer") {
      note_mac_only(item);
      once(item, seen_outer, "outer=");
      outer_item = std::string(item);
      s.outer = parse_format_item(item, value, Role::accumulator);
    } else if (key == "out") {
      once(item, seen_out, "out=");
      s.out = parse_format_item(item, value, Role::output);
    } else {
      fail(item, "unknown key '" + key + "' (keys: in, a, b, prod, fused, acc, order, outer, out, bacc; or qfp32)");
    }
  }
  if (block_a || block_b) {
    if (!block_a || !block_b) {
      fail(scalar_input_item.empty() ? block_item : scalar_input_item,
           "block-format inputs need both operands in block formats (the block dot product multiplies block by block)");
    }
    if (s.qfp32 && (!mac_only_item.empty() || seen_bacc || s.fused)) {
      fail(s.fused ? std::string("fused") : (seen_bacc ? bacc_item : mac_only_item),
           "qfp32 rounds the operands block by block and accumulates in FP32 through OpenBLAS; only in=, a=, b= and "
           "out= go with it (drop qfp32 for the block dot product)");
    }
    if (!scalar_mac_item.empty()) {
      fail(scalar_mac_item, "with block-format inputs the products are exact integers summed in the integer block "
                          "accumulator (bacc=) and block sums are combined in outer=; prod=, acc= and order= do not apply");
    }
    if (s.fused) fail("fused", "with block-format inputs there is no fused a*b + c step (the block accumulator is an integer adder)");
    s.block = BlockMac{*block_a, *block_b, bacc_bits, bacc_wrap};
    if (s.outer && s.outer == s.acc) s.outer.reset();
    s.validate();
    return s;
  }
  if (seen_bacc) fail(bacc_item, "bacc= is the integer block accumulator of block-format inputs (in=hbfp8/64, mxfp4, ...)");
  if (s.qfp32 && (!mac_only_item.empty() || s.fused)) {
    fail(s.fused ? std::string("fused") : mac_only_item,
         "qfp32 multiplies and accumulates in FP32 through OpenBLAS, in OpenBLAS's order; only in=, a=, b= and out= "
         "go with it (drop qfp32 for a bit-accurate MAC)");
  }
  if (seen_outer && !s.order.grouped()) {
    fail(outer_item, "outer= applies only to order=chunkN, treeN or ftreeN (order is " + mpsim::to_string(s.order) + ")");
  }
  // An outer equal to acc is the default; dropping it keeps one representation per meaning.
  if (s.outer && s.outer == s.acc) s.outer.reset();
  s.validate();
  return s;
}

void MacSpec::validate() const {
  check_format("a", a, Role::input);
  check_format("b", b, Role::input);
  if (block) {
    validate_block();
    return;
  }
  if (prod) check_format("prod", *prod, Role::product);
  if (acc) check_format("acc", *acc, Role::accumulator);
  if (outer) check_format("outer", *outer, Role::accumulator);
  if (out) check_format("out", *out, Role::output);
  if (qfp32) {
    if (prod || fused || acc != Format::parse("fp32") || order != MacOrder{} || outer) {
      fail("qfp32", "the fast mode accumulates in FP32 through OpenBLAS: prod=exact, acc=fp32, order=seq, no fused or outer=");
    }
    // Its operands and results are fp32 arrays handed to OpenBLAS.
    for (const auto& [key, f] : {std::pair<const char*, const Format*>{"a", &a}, {"b", &b}, {"out", out ? &*out : nullptr}}) {
      if (f && !f->fits(Carrier::fp32)) {
        fail(item_text(key, *f), "qfp32 hands fp32 arrays to OpenBLAS, and this format has values fp32 cannot hold");
      }
    }
  }
  const auto ord = [&] { return "order=" + mpsim::to_string(order); };
  if (order.grouped() && order.n == 0) fail(ord(), "the group size must be at least 1");
  if (!order.grouped() && order.n != 0) fail(ord(), "seq and kahan take no group size");
  if (outer && outer != acc && !order.grouped()) {
    fail(item_text("outer", *outer), "outer= applies only to order=chunkN, treeN or ftreeN (order is " + mpsim::to_string(order) + ")");
  }
  if (fused) {
    if (prod) {
      fail("fused", "a fused MAC rounds a*b + c once, so the product cannot be rounded first (" + item_text("prod", *prod) +
                        "); use prod=exact");
    }
    if (!acc) fail("fused", "with acc=exact nothing is rounded, so 'fused' has no meaning");
    if (order.kind == MacOrderKind::tree || order.kind == MacOrderKind::ftree || order.kind == MacOrderKind::kahan) {
      fail("fused", "a fused a*b + c step exists only in orders that add one product at a time into the accumulator (seq, chunkN); not in " + ord());
    }
  }
}

void MacSpec::validate_block() const {
  const std::string inputs =
      block->a == block->b ? "in=" + block->a.to_string() : "a=" + block->a.to_string() + " b=" + block->b.to_string();
  for (const BlockFormat* f : {&block->a, &block->b}) {
    if (const char* why = why_invalid_block(*f)) fail(inputs, why);
  }
  if (qfp32 && (block->acc_bits != 0 || outer)) {
    fail("qfp32", "the fast mode accumulates in FP32 through OpenBLAS: no bacc= or outer=");
  }
  if (qfp32) {
    for (const BlockFormat* f : {&block->a, &block->b}) {
      if (!f->fits(Carrier::fp32)) fail(inputs, "qfp32 hands fp32 arrays to OpenBLAS, and this format has values fp32 cannot hold");
    }
  }
  if (prod || fused || acc != Format::parse("fp32") || order != MacOrder{}) {
    fail(inputs, "with block-format inputs the products are exact integers summed in the integer block accumulator "
                 "(bacc=) and block sums are combined in outer=; prod=, fused, acc= and order= do not apply");
  }
  if (detail::block_extent(block->a) != detail::block_extent(block->b)) {
    fail(inputs, "the two operands' blocks must cover the same run of the reduction (" +
                     std::to_string(detail::block_extent(block->a)) + " and " +
                     std::to_string(detail::block_extent(block->b)) + " elements)");
  }
  const int needed = block->bits_needed();
  if (needed > BlockMac::kMaxBits) {
    fail(inputs, "a block sum needs a " + std::to_string(needed) + "-bit accumulator, more than the " +
                     std::to_string(BlockMac::kMaxBits) + " bits the engine holds");
  }
  const std::string bacc = "bacc=" + block_acc_text(*block);
  if (block->acc_bits != 0 && (block->acc_bits < 2 || block->acc_bits > BlockMac::kMaxBits)) {
    fail(bacc, "the block accumulator width must be 2 .. " + std::to_string(BlockMac::kMaxBits) + " bits");
  }
  if (block->wrap && block->acc_bits == 0) fail(bacc, "bacc=auto cannot overflow, so ':wrap' has no meaning");
  const std::optional<Format>& o = outer_format();
  if (!o) fail(inputs, "block sums are combined in outer=, which must be a format");
  check_format("outer", *o, Role::accumulator);
  if (out) check_format("out", *out, Role::output);
}

std::string MacSpec::to_string() const {
  if (block) {
    std::string s = block->a == block->b ? "in=" + block->a.to_string()
                                         : "a=" + block->a.to_string() + " b=" + block->b.to_string();
    if (qfp32) return "qfp32 " + s + (out ? " out=" + out->to_string() : std::string());
    s += " bacc=" + block_acc_text(*block) + " outer=" + outer_format()->to_string();
    if (out) s += " out=" + out->to_string();
    return s;
  }
  std::string s = a == b ? "in=" + a.to_string() : "a=" + a.to_string() + " b=" + b.to_string();
  if (qfp32) return "qfp32 " + s + (out ? " out=" + out->to_string() : std::string());
  s += " prod=" + (prod ? prod->to_string() : std::string("exact"));
  if (fused) s += " fused";
  s += " acc=" + (acc ? acc->to_string() : std::string("exact"));
  s += " order=" + mpsim::to_string(order);
  if (outer && outer != acc) s += " outer=" + outer->to_string();
  if (out) s += " out=" + out->to_string();
  return s;
}

bool MacSpec::operator==(const MacSpec& o) const {
  return a == o.a && b == o.b && prod == o.prod && fused == o.fused && acc == o.acc && order == o.order &&
         outer_format() == o.outer_format() && out == o.out && qfp32 == o.qfp32 && block == o.block;
}

}  // namespace mpsim
