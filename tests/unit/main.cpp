// The single Catch2 main for the unit-test binary; every other tests/unit/*.cpp adds cases.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
