// Parsing the perf tools' flags (perf_options.h).
#include "perf_options.h"

#include <getopt.h>

#include <cerrno>
#include <cinttypes>
#include <cstdlib>
#include <cstring>
#include <string>

#include "perf_values.h"

namespace bcclperf {

// Before the communicator exists the rank is unknown; the launchers' variables say whether this
// process should be the one to print usage and flag errors.
bool LooksLikeRankZero() {
  for (const char* name : {"BCCL_RANK", "RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"}) {
    const char* v = std::getenv(name);
    if (v && *v) return std::strcmp(v, "0") == 0;
  }
  return true;
}

void Usage(FILE* out, const char* prog) {
  std::fprintf(out,
               "usage: %s [flags]   (one rank; start N of them with bcclrun -n N)\n"
               "  -b,--minbytes <n[K|M|G]>     smallest size (default 32M)\n"
               "  -e,--maxbytes <n[K|M|G]>     largest size (default 32M)\n"
               "  -i,--stepbytes <n[K|M|G]>    size increment when -f is 1 (default 1M)\n"
               "  -f,--stepfactor <n>          size multiplication factor (default 1: use -i)\n"
               "  -n,--iters <n>               timed iterations (default 20)\n"
               "  -w,--warmup_iters <n>        warm-up iterations (default 5)\n"
               "  -c,--check <0|1>             check results (default 1)\n"
               "  -d,--datatype <type|all>     int8 uint8 int32 uint32 int64 uint64 half float\n"
               "                               double bfloat16 (default float)\n"
               "  -o,--op <op|all>             sum prod max min avg (default sum)\n"
               "  -r,--root <rank>             root of broadcast/reduce (default 0)\n"
               "  -z,--blocking <0|1>          0: enqueue on a bccl stream and synchronize;\n"
               "                               1: NULL stream, every call blocks (default 0)\n"
               "  -P,--per_call <0|1>          1: also time each call on its own and print each\n"
               "                               row's spread (min, median, p90, max of the slowest\n"
               "                               rank), comparable with a ping-pong tool's typical\n"
               "                               (median) latency; needs -z 1 (default 0)\n"
               "  -O,--out_of_place_only <0|1> 1: skip the in-place loop (its columns say N/A);\n"
               "                               halves the time when only out-of-place counts\n"
               "                               (a comparison with peers that time only that)\n"
               "  -h,--help\n",
               prog);
}

bool ParseSize(const char* s, size_t* out) {
  if (!s || !*s || *s == '-') return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (errno || end == s) return false;
  unsigned shift = 0;
  switch (*end) {
    case '\0':
      break;
    case 'K':
    case 'k':
      shift = 10;
      ++end;
      break;
    case 'M':
    case 'm':
      shift = 20;
      ++end;
      break;
    case 'G':
    case 'g':
      shift = 30;
      ++end;
      break;
    default:
      return false;
  }
  if (*end != '\0') return false;
  if (v > (static_cast<unsigned long long>(SIZE_MAX) >> shift)) return false;
  *out = static_cast<size_t>(v) << shift;
  return true;
}

bool ParseInt(const char* s, long lo, long hi, int* out) {
  if (!s || !*s) return false;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  if (errno || *end != '\0' || v < lo || v > hi) return false;
  *out = static_cast<int>(v);
  return true;
}

bool ParseDtypes(const char* s, std::vector<bcclDataType_t>* out) {
  out->clear();
  if (std::strcmp(s, "all") == 0) {
    for (int t = 0; t < bcclNumTypes; ++t) out->push_back(static_cast<bcclDataType_t>(t));
    return true;
  }
  for (const TypeInfo& t : kTypes) {
    if (std::strcmp(s, t.name) == 0) {
      out->push_back(t.type);
      return true;
    }
  }
  static const struct {
    const char* name;
    bcclDataType_t type;
  } kAliases[] = {{"char", bcclChar},       {"int", bcclInt},         {"float16", bcclFloat16},
                  {"float32", bcclFloat32}, {"float64", bcclFloat64}, {"bf16", bcclBfloat16}};
  for (const auto& a : kAliases) {
    if (std::strcmp(s, a.name) == 0) {
      out->push_back(a.type);
      return true;
    }
  }
  return false;
}

bool ParseOps(const char* s, std::vector<bcclRedOp_t>* out) {
  out->clear();
  for (int o = 0; o < bcclNumOps; ++o) {
    if (std::strcmp(s, "all") == 0 || std::strcmp(s, kOpNames[o]) == 0) {
      out->push_back(static_cast<bcclRedOp_t>(o));
    }
  }
  return !out->empty();
}

// 0: run; 1: help printed, exit 0; 2: bad flags, exit 2.
int ParseArgs(int argc, char** argv, Options* o) {
  static const option kLong[] = {
      {"minbytes", required_argument, nullptr, 'b'},
      {"maxbytes", required_argument, nullptr, 'e'},
      {"stepbytes", required_argument, nullptr, 'i'},
      {"stepfactor", required_argument, nullptr, 'f'},
      {"iters", required_argument, nullptr, 'n'},
      {"warmup_iters", required_argument, nullptr, 'w'},
      {"check", required_argument, nullptr, 'c'},
      {"datatype", required_argument, nullptr, 'd'},
      {"op", required_argument, nullptr, 'o'},
      {"root", required_argument, nullptr, 'r'},
      {"blocking", required_argument, nullptr, 'z'},
      {"per_call", required_argument, nullptr, 'P'},
      {"out_of_place_only", required_argument, nullptr, 'O'},
      {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0},
  };
  const bool loud = LooksLikeRankZero();
  auto bad = [&](const char* flag, const char* value) {
    if (loud) {
      std::fprintf(stderr, "%s: invalid value '%s' for %s\n", argv[0], value ? value : "", flag);
      Usage(stderr, argv[0]);
    }
    return 2;
  };
  if (!loud) opterr = 0;  // getopt's own complaints would repeat once per rank
  int c;
  int v = 0;
  while ((c = getopt_long(argc, argv, "b:e:i:f:n:w:c:d:o:r:z:P:O:h", kLong, nullptr)) != -1) {
    switch (c) {
      case 'b':
        if (!ParseSize(optarg, &o->min_bytes)) return bad("-b", optarg);
        break;
      case 'e':
        if (!ParseSize(optarg, &o->max_bytes)) return bad("-e", optarg);
        break;
      case 'i':
        if (!ParseSize(optarg, &o->step_bytes)) return bad("-i", optarg);
        break;
      case 'f':
        if (!ParseInt(optarg, 1, 1 << 20, &v)) return bad("-f", optarg);
        o->step_factor = static_cast<size_t>(v);
        break;
      case 'n':
        if (!ParseInt(optarg, 1, 1 << 30, &o->iters)) return bad("-n", optarg);
        break;
      case 'w':
        if (!ParseInt(optarg, 0, 1 << 30, &o->warmup)) return bad("-w", optarg);
        break;
      case 'c':
        if (!ParseInt(optarg, 0, 1, &v)) return bad("-c", optarg);
        o->check = v != 0;
        break;
      case 'd':
        if (!ParseDtypes(optarg, &o->dtypes)) return bad("-d", optarg);
        break;
      case 'o':
        if (!ParseOps(optarg, &o->ops)) return bad("-o", optarg);
        break;
      case 'r':
        if (!ParseInt(optarg, 0, INT32_MAX, &o->root)) return bad("-r", optarg);
        break;
      case 'z':
        if (!ParseInt(optarg, 0, 1, &v)) return bad("-z", optarg);
        o->blocking = v != 0;
        break;
      case 'P':
        if (!ParseInt(optarg, 0, 1, &v)) return bad("-P", optarg);
        o->per_call = v != 0;
        break;
      case 'O':
        if (!ParseInt(optarg, 0, 1, &v)) return bad("-O", optarg);
        o->out_of_place_only = v != 0;
        break;
      case 'h':
        if (loud) Usage(stdout, argv[0]);
        return 1;
      default:
        if (loud) Usage(stderr, argv[0]);
        return 2;
    }
  }
  if (optind < argc) return bad("arguments", argv[optind]);
  if (o->min_bytes > o->max_bytes) return bad("-b (larger than -e)", "");
  if (o->step_factor <= 1 && o->step_bytes == 0) return bad("-i (with -f 1)", "0");
  // Through a stream a call returns once enqueued: its own time would say nothing.
  if (o->per_call && !o->blocking) return bad("-P (without -z 1)", "1");
  return 0;
}

std::vector<size_t> Sizes(const Options& o) {
  std::vector<size_t> sizes;
  for (size_t s = o.min_bytes; s <= o.max_bytes;) {
    sizes.push_back(s);
    size_t next;
    if (o.step_factor > 1) {
      if (s == 0) {
        next = 1;
      } else if (s > SIZE_MAX / o.step_factor) {
        break;
      } else {
        next = s * o.step_factor;
      }
    } else {
      if (s > SIZE_MAX - o.step_bytes) break;
      next = s + o.step_bytes;
    }
    s = next;
  }
  return sizes;
}

// Each row's count is a whole number of elements. A size too small for one element still runs
// one element (the smallest row the collective can do), and sizes that round to an already
// listed count are dropped instead of printing the same row twice.
std::vector<size_t> Counts(const std::vector<size_t>& sizes, size_t unit_bytes) {
  std::vector<size_t> counts;
  for (size_t s : sizes) {
    const size_t c = std::max<size_t>(1, s / unit_bytes);
    if (counts.empty() || counts.back() != c) counts.push_back(c);
  }
  return counts;
}

}  // namespace bcclperf
