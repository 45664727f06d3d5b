// JSON parser and writer: escaping, exact integers, round-trip doubles, strict errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "core/error.hpp"
#include "core/json.hpp"

using namespace competelm;

namespace {

// The Error message of parse_json(text), or "" if it parsed.
std::string parse_error(std::string_view text) {
  try {
    parse_json(text, "t.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("json: writer escapes strings and round-trips them through the parser", "[json]") {
  const std::string tricky = std::string("quote\" backslash\\ nl\n tab\t cr\r bell\x07 nul") +
                             '\0' + " utf8 \xC3\xA9 slash/";
  JsonObject o;
  o.add("s", tricky).add("k\"ey", "v");
  const std::string text = o.str();
  CHECK(text.find('\n') == std::string::npos);  // one line, for jsonl
  CHECK(text.find("\\u0007") != std::string::npos);
  CHECK(text.find("\\u0000") != std::string::npos);
  CHECK(text.find("\\\"") != std::string::npos);
  const JsonValue v = parse_json(text);
  CHECK(v.at("s").as_string() == tricky);
  CHECK(v.at("k\"ey").as_string() == "v");
  CHECK(json_quote("a\"b") == "\"a\\\"b\"");
}

TEST_CASE("json: writer output of all value kinds", "[json]") {
  JsonObject nested;
  nested.add("x", int64_t(-3));
  JsonObject o;
  o.add("i", 42).add("neg", int64_t(-7)).add("big", uint64_t(18446744073709551615ULL));
  o.add("b", true).add("f", false).add("d", 0.1).add("nan", std::nan("")).add("inf", INFINITY);
  o.add("n", nested).add_null("z").add("cs", "c-string");
  CHECK(o.str() ==
        "{\"i\":42,\"neg\":-7,\"big\":18446744073709551615,\"b\":true,\"f\":false,\"d\":0.1,"
        "\"nan\":null,\"inf\":null,\"n\":{\"x\":-3},\"z\":null,\"cs\":\"c-string\"}");
  CHECK(o.body().front() == '"');
  CHECK(JsonObject().str() == "{}");
}

TEST_CASE("json: doubles round-trip bit-exactly, integers stay exact", "[json]") {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 2000; ++i) {
    double d;
    uint64_t bits = rng();
    std::memcpy(&d, &bits, sizeof(d));
    if (!std::isfinite(d)) continue;
    const std::string text = json_number(d);
    const double back = parse_json(text).as_double();
    uint64_t back_bits;
    std::memcpy(&back_bits, &back, sizeof(back));
    INFO(text);
    REQUIRE(back_bits == bits);
  }
  CHECK(json_number(std::numeric_limits<double>::denorm_min()) == "5e-324");
  CHECK(json_number(-0.0) == "-0");
  CHECK(json_number(std::numeric_limits<double>::quiet_NaN()) == "null");

  const JsonValue v = parse_json(
      "[9007199254740993, -9223372036854775808, 18446744073709551615, 1.5, 1e2, 123456789012345678901234]");
  const auto& a = v.as_array();
  CHECK(a[0].as_int64() == 9007199254740993LL);  // 2^53 + 1: would be lost through double
  CHECK(a[1].as_int64() == std::numeric_limits<int64_t>::min());
  CHECK(a[2].as_uint64() == 18446744073709551615ULL);
  CHECK_THROWS_AS(a[2].as_int64(), Error);
  CHECK(a[3].as_double() == 1.5);
  CHECK_THROWS_AS(a[3].as_int64(), Error);
  CHECK_FALSE(a[4].is_integer());  // 1e2 is written as a float
  CHECK(a[4].as_double() == 100.0);
  CHECK(a[5].as_double() == Approx(1.2345678901234568e23));
  CHECK_THROWS_AS(parse_json("-1").as_uint64(), Error);
}

TEST_CASE("json: parses nested objects, arrays and escapes", "[json]") {
  const JsonValue v = parse_json(R"( {
    "format": "competelm-checkpoint", "step": 12,
    "files": {"model.bin": {"bytes": 1024, "checksum": "00ff"}, "cfg": {"bytes": 0, "checksum": "1"}},
    "list": [1, [2, []], {}, null, true, false, "x"],
    "esc": "\u00e9\ud83d\ude00\n\/"
  } )");
  CHECK(v.at("format").as_string() == "competelm-checkpoint");
  CHECK(v.at("step").as_int64() == 12);
  const auto& files = v.at("files").as_object();
  REQUIRE(files.size() == 2);
  CHECK(files[0].first == "model.bin");  // document order kept
  CHECK(files[0].second.at("bytes").as_uint64() == 1024);
  CHECK(files[1].first == "cfg");
  const auto& list = v.at("list").as_array();
  REQUIRE(list.size() == 7);
  CHECK(list[1].as_array()[1].as_array().empty());
  CHECK(list[2].as_object().empty());
  CHECK(list[3].is_null());
  CHECK(list[4].as_bool());
  CHECK_FALSE(list[5].as_bool());
  CHECK(v.at("esc").as_string() == "\xC3\xA9\xF0\x9F\x98\x80\n/");
  CHECK(v.find("absent") == nullptr);
  CHECK_THROWS_WITH(v.at("absent", "meta.json"), Catch::Contains("meta.json") && Catch::Contains("absent"));
  CHECK_THROWS_WITH(v.at("step").as_string("meta.json: step"), Catch::Contains("meta.json: step"));
}

TEST_CASE("json: malformed input is rejected with the byte offset", "[json]") {
  CHECK_THAT(parse_error("{\"a\" 1}"), Catch::Contains("t.json: offset 5") && Catch::Contains("':'"));
  CHECK_THAT(parse_error("{\"a\": 1,}"), Catch::Contains("offset 8"));
  CHECK_THAT(parse_error("[1, 2"), Catch::Contains("offset 5") && Catch::Contains("end of input"));
  CHECK_THAT(parse_error("{\"a\": 1, \"a\": 2}"), Catch::Contains("duplicate key") && Catch::Contains("offset 9"));
  CHECK_THAT(parse_error("01"), Catch::Contains("leading zero"));
  CHECK_THAT(parse_error("1.e5"), Catch::Contains("offset 2"));
  CHECK_THAT(parse_error("\"abc"), Catch::Contains("unterminated"));
  CHECK_THAT(parse_error("\"a\nb\""), Catch::Contains("control character") && Catch::Contains("offset 2"));
  CHECK_THAT(parse_error("\"\\x\""), Catch::Contains("invalid escape"));
  CHECK_THAT(parse_error("\"\\ud800\""), Catch::Contains("surrogate"));
  CHECK_THAT(parse_error("\"\\u12g4\""), Catch::Contains("hex digit"));
  CHECK_THAT(parse_error("tru"), Catch::Contains("true"));
  CHECK_THAT(parse_error("NaN"), Catch::Contains("offset 0"));
  CHECK_THAT(parse_error("1e999"), Catch::Contains("out of double range"));
  CHECK_THAT(parse_error("{} x"), Catch::Contains("trailing") && Catch::Contains("offset 3"));
  CHECK_THAT(parse_error(""), Catch::Contains("end of input"));
  CHECK_THAT(parse_error("// c\n1"), Catch::Contains("offset 0"));
  CHECK_THAT(parse_error(std::string(100000, '[')), Catch::Contains("nesting"));  // no stack overflow
  CHECK(parse_error(std::string(200, '[') + std::string(200, ']')).empty());
}
