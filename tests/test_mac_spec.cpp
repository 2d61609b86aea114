// The MAC spec grammar: defaults, canonical printing, round trips and every error, each of
// which must name the offending item.
#include <gtest/gtest.h>

#include <string>

#include "mpsim/mac.h"

namespace mpsim {
namespace {

Format F(const char* s) { return Format::parse(s); }

TEST(MacSpec, Defaults) {
  const MacSpec d;
  EXPECT_EQ(d.a, F("fp32"));
  EXPECT_EQ(d.b, F("fp32"));
  EXPECT_FALSE(d.prod.has_value());
  EXPECT_FALSE(d.fused);
  ASSERT_TRUE(d.acc.has_value());
  EXPECT_EQ(*d.acc, F("fp32"));
  EXPECT_EQ(d.order, (MacOrder{MacOrderKind::seq, 0}));
  EXPECT_FALSE(d.outer.has_value());
  EXPECT_FALSE(d.out.has_value());
  EXPECT_EQ(MacSpec::parse(""), d);
  EXPECT_EQ(MacSpec::parse("   "), d);
  EXPECT_EQ(d.to_string(), "in=fp32 prod=exact acc=fp32 order=seq");
}

TEST(MacSpec, ParsesEveryItem) {
  const MacSpec s = MacSpec::parse("a=e5m2:cfg5 b=e4m3fn prod=e6m5 acc=q8.13@rz order=chunk64 outer=fp32 out=bf16");
  EXPECT_EQ(s.a, F("e5m2:cfg5"));
  EXPECT_EQ(s.b, F("e4m3fn"));
  EXPECT_EQ(s.prod, F("e6m5"));
  EXPECT_EQ(s.acc, F("q8.13@rz"));
  EXPECT_EQ(s.order, (MacOrder{MacOrderKind::chunk, 64}));
  EXPECT_EQ(s.outer, F("fp32"));
  EXPECT_EQ(s.out, F("bf16"));
  const MacSpec t = MacSpec::parse("in=e5m2 fused acc=e6m5@rz order=chunk32");
  EXPECT_EQ(t.a, F("e5m2"));
  EXPECT_EQ(t.b, F("e5m2"));
  EXPECT_TRUE(t.fused);
  EXPECT_FALSE(t.prod.has_value());
  EXPECT_EQ(t.outer_format(), t.acc);
}

TEST(MacSpec, CanonicalStrings) {
  const std::pair<const char*, const char*> cases[] = {
      {"in=E5M2:CFG5 prod=exact acc=e6m5 order=seq", "in=e5m2:cfg5 prod=exact acc=e6m5 order=seq"},
      {"acc=e6m5 in=e5m2:sp=ext:sub=asnormal", "in=e5m2:cfg5 prod=exact acc=e6m5 order=seq"},
      {"a=e4m3 b=e4m3", "in=e4m3 prod=exact acc=fp32 order=seq"},
      {"a=e4m3 b=e5m2", "a=e4m3 b=e5m2 prod=exact acc=fp32 order=seq"},
      {"ORDER=CHUNK064 acc=bf16", "in=fp32 prod=exact acc=bf16 order=chunk64"},
      {"order=chunk8 acc=bf16 outer=bf16", "in=fp32 prod=exact acc=bf16 order=chunk8"},  // outer = acc is the default
      {"order=tree4 acc=e5m5 outer=fp32", "in=fp32 prod=exact acc=e5m5 order=tree4 outer=fp32"},
      {"order=ftree16 acc=exact outer=fp32", "in=fp32 prod=exact acc=exact order=ftree16 outer=fp32"},
      {"fused acc=fp16", "in=fp32 prod=exact fused acc=fp16 order=seq"},
      {"acc=q8.13:sat out=fp16@rne", "in=fp32 prod=exact acc=q8.13 order=seq out=fp16"},
      {"\tin=bf16\n  prod=bf16@rz   acc=fp32@sr8 order=kahan ", "in=bf16 prod=bf16@rz acc=fp32@sr8 order=kahan"},
      {"prod=EXACT acc=Exact", "in=fp32 prod=exact acc=exact order=seq"},
  };
  for (const auto& [in, want] : cases) {
    SCOPED_TRACE(in);
    const MacSpec s = MacSpec::parse(in);
    EXPECT_EQ(s.to_string(), want);
    EXPECT_EQ(MacSpec::parse(s.to_string()), s);
    EXPECT_EQ(MacSpec::parse(s.to_string()).to_string(), want);
  }
}

TEST(MacSpec, RoundTripOverManyCombinations) {
  const char* inputs[] = {"fp32", "e5m2:cfg5", "e4m3fn", "bf16", "int8:scale=0.5", "q4.4"};
  const char* prods[] = {"exact", "e6m5", "fp16@rz"};
  const char* accs[] = {"exact", "fp32", "e6m5@sr", "q8.13:wrap@rz", "int32:scale=0x1p-13"};
  const char* orders[] = {"seq", "chunk1", "chunk64", "tree2", "ftree9", "kahan"};
  const char* outers[] = {"", "fp32", "q11.13"};
  const char* outs[] = {"", "bf16"};
  int n = 0;
  for (const char* a : inputs)
    for (const char* p : prods)
      for (const char* c : accs)
        for (const char* o : orders)
          for (const char* u : outers)
            for (const char* t : outs) {
              std::string text = std::string("a=") + a + " b=" + inputs[(n + 1) % 6] + " prod=" + p + " acc=" + c + " order=" + o;
              const std::string ord = o;
              if (*u && ord != "seq" && ord != "kahan") text += std::string(" outer=") + u;
              if (*t) text += std::string(" out=") + t;
              SCOPED_TRACE(text);
              const MacSpec s = MacSpec::parse(text);
              EXPECT_EQ(MacSpec::parse(s.to_string()), s);
              EXPECT_EQ(MacSpec::parse(s.to_string()).to_string(), s.to_string());
              ++n;
            }
  EXPECT_GT(n, 3000);
}

TEST(MacSpec, OrderParsing) {
  EXPECT_EQ(parse_mac_order("seq"), (MacOrder{MacOrderKind::seq, 0}));
  EXPECT_EQ(parse_mac_order("KAHAN"), (MacOrder{MacOrderKind::kahan, 0}));
  EXPECT_EQ(parse_mac_order("chunk1"), (MacOrder{MacOrderKind::chunk, 1}));
  EXPECT_EQ(parse_mac_order("tree8"), (MacOrder{MacOrderKind::tree, 8}));
  EXPECT_EQ(parse_mac_order("ftree576"), (MacOrder{MacOrderKind::ftree, 576}));
  EXPECT_EQ(parse_mac_order("chunk999999999"), (MacOrder{MacOrderKind::chunk, 999999999}));
  EXPECT_EQ(to_string(MacOrder{MacOrderKind::ftree, 16}), "ftree16");
}

// The error must be a MacSpecError (hence FormatError, hence invalid_argument) whose message
// contains every fragment given.
void expect_error(const std::string& text, std::initializer_list<const char*> fragments) {
  SCOPED_TRACE("spec: " + text);
  try {
    (void)MacSpec::parse(text);
    ADD_FAILURE() << "no error";
  } catch (const MacSpecError& e) {
    const std::string msg = e.what();
    for (const char* f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "message: " << msg << "\nmissing: " << f;
    const std::invalid_argument* base = &e;  // the CLI catches FormatError / invalid_argument
    EXPECT_NE(base, nullptr);
  }
}

TEST(MacSpec, Errors) {
  // Unknown keys and malformed items.
  expect_error("acc=fp32 foo=bar", {"'foo=bar'", "unknown key 'foo'"});
  expect_error("accumulator=fp32", {"'accumulator=fp32'", "unknown key"});
  expect_error("in=fp32 seq", {"'seq'", "expected key=value"});
  expect_error("fused=1", {"'fused=1'", "no value"});
  expect_error("acc=", {"'acc='", "missing value"});
  expect_error("=fp32", {"'=fp32'", "unknown key ''"});
  // Duplicates, including in= against a= / b=.
  expect_error("acc=fp32 acc=fp16", {"'acc=fp16'", "more than once"});
  expect_error("in=e5m2 a=e4m3", {"'a=e4m3'", "more than once"});
  expect_error("b=e4m3 in=e5m2", {"'in=e5m2'", "more than once"});
  expect_error("in=e5m2 in=e5m2", {"'in=e5m2'", "more than once"});
  expect_error("order=seq order=seq", {"'order=seq'", "more than once"});
  expect_error("fused fused", {"'fused'", "more than once"});
  expect_error("prod=exact prod=fp16", {"'prod=fp16'", "more than once"});
  expect_error("out=fp16 out=fp16", {"'out=fp16'", "more than once"});
  expect_error("order=chunk4 outer=fp32 outer=fp16", {"'outer=fp16'", "more than once"});
  // Orders.
  expect_error("order=chunk0", {"'order=chunk0'", "at least 1"});
  expect_error("order=tree0", {"'order=tree0'", "at least 1"});
  expect_error("order=chunk", {"'order=chunk'", "group size"});
  expect_error("order=ftree", {"'order=ftree'", "group size"});
  expect_error("order=chunk-4", {"'order=chunk-4'", "decimal"});
  expect_error("order=chunk1234567890", {"'order=chunk1234567890'", "9 digits"});
  expect_error("order=tree4x", {"'order=tree4x'"});
  expect_error("order=pairwise", {"'order=pairwise'", "unknown order"});
  expect_error("order=seq4", {"'order=seq4'", "unknown order"});
  // Malformed formats: Format::parse's message, wrapped with the item.
  expect_error("acc=e6x5", {"'acc=e6x5'", "e6x5"});
  expect_error("in=e5m2:cfg9", {"'in=e5m2:cfg9'", "cfg"});
  expect_error("prod=fp16@rq", {"'prod=fp16@rq'"});
  expect_error("out=none", {"'out=none'"});
  expect_error("outer=exact order=chunk4", {"'outer=exact'"});
  expect_error("acc=fp32,fp16", {"'acc=fp32,fp16'"});
  // Block formats.
  // Block formats (tests/test_block_mac.cpp has the rest).
  expect_error("a=mxfp8_e4m3", {"'a=mxfp8_e4m3'", "both operands in block formats"});
  expect_error("b=NVFP4", {"'b=NVFP4'", "both operands in block formats"});
  expect_error("in=e4m3/32", {"'in=e4m3/32'", "only hbfp takes a block size"});
  expect_error("in=hbfp4/64 acc=fp16", {"'acc=fp16'", "do not apply"});
  expect_error("acc=hbfp8/16", {"'acc=hbfp8/16'", "block format"});
  // Incompatible options.
  expect_error("fused prod=fp16", {"fused", "prod=fp16", "rounds a*b + c once"});
  expect_error("fused acc=exact", {"fused", "acc=exact"});
  expect_error("fused order=tree4", {"fused", "order=tree4"});
  expect_error("fused order=ftree4", {"fused", "order=ftree4"});
  expect_error("fused order=kahan", {"fused", "order=kahan"});
  expect_error("outer=fp32 acc=bf16", {"'outer=fp32'", "chunkN"});
  expect_error("order=kahan outer=fp32", {"'outer=fp32'", "kahan"});
  expect_error("in=e5m2@sr", {"'in=e5m2@sr'", "deterministic"});
  expect_error("b=e4m3fn@sr4", {"'b=e4m3fn@sr4'", "deterministic"});
  expect_error("acc=fp16@hyst", {"acc=fp16@hyst", "hysteresis"});
  expect_error("in=int8:perchannel", {"in=int8:perchannel", "per-channel"});
  expect_error("acc=e8m0fnu", {"acc=e8m0fnu", "no zero"});
}

TEST(MacSpec, ValidateCatchesProgrammaticSpecs) {
  MacSpec s;
  s.fused = true;
  s.prod = F("fp16");
  EXPECT_THROW(s.validate(), MacSpecError);
  MacSpec t;
  t.order = {MacOrderKind::chunk, 0};
  EXPECT_THROW(t.validate(), MacSpecError);
  MacSpec u;
  u.outer = F("fp16");  // with order=seq
  EXPECT_THROW(u.validate(), MacSpecError);
  u.order = {MacOrderKind::tree, 4};
  EXPECT_NO_THROW(u.validate());
  EXPECT_EQ(MacSpec::parse(u.to_string()), u);
  // An outer equal to acc means the same as none.
  MacSpec v;
  v.order = {MacOrderKind::chunk, 4};
  MacSpec w = v;
  w.outer = F("fp32");
  EXPECT_EQ(v, w);
  EXPECT_EQ(v.to_string(), w.to_string());
  EXPECT_FALSE(v == MacSpec::parse("order=chunk4 outer=fp16"));
}

}  // namespace
}  // namespace mpsim
