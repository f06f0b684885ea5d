// The shared body of the perf tools: flag parsing, buffers, timing, result checking and the
// nccl-tests-shaped table. See perf_common.h for the split between harness and tool.
#include "perf_common.h"

#include <getopt.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

namespace bcclperf {

// ---- fp16 / bf16 ------------------------------------------------------------------------------

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x1ffu));
  // 65520 is the midpoint between the largest half (65504) and 2^16; ties go to even = inf.
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a < 0x38800000u) {
    // Below 2^-14 the half is subnormal, counted in units of 2^-24. Scaling by a power of two is
    // exact, so one nearbyint (ties-to-even by default) does the rounding.
    float af;
    std::memcpy(&af, &a, sizeof af);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(af * 16777216.0f)));
  }
  const uint32_t r = a - 0x38000000u;  // rebias the exponent from 127 to 15
  uint32_t h = r >> 13;
  const uint32_t rem = r & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
  return static_cast<uint16_t>(sign | h);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  const uint32_t bits =
      exp == 31 ? (sign | 0x7f800000u | (man << 13)) : (sign | ((exp + 112u) << 23) | (man << 13));
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t FloatToBfloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float Bfloat16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

namespace {

// ---- data types -------------------------------------------------------------------------------

struct TypeInfo {
  bcclDataType_t type;
  const char* name;
  size_t size;
  bool is_float;
  bool is_signed;
  // The largest magnitude at which every integer is exact in the type. 64-bit integers get 2^62
  // rather than 2^53 so a library that reduces them through double is caught.
  int64_t limit;
};

// Indexed by bcclDataType_t, which is also nccl-tests' "-d all" order.
const TypeInfo kTypes[bcclNumTypes] = {
    {bcclInt8, "int8", 1, false, true, 127},
    {bcclUint8, "uint8", 1, false, false, 255},
    {bcclInt32, "int32", 4, false, true, INT32_MAX},
    {bcclUint32, "uint32", 4, false, false, UINT32_MAX},
    {bcclInt64, "int64", 8, false, true, int64_t{1} << 62},
    {bcclUint64, "uint64", 8, false, false, int64_t{1} << 62},
    {bcclFloat16, "half", 2, true, true, 2048},
    {bcclFloat32, "float", 4, true, true, int64_t{1} << 24},
    {bcclFloat64, "double", 8, true, true, int64_t{1} << 53},
    {bcclBfloat16, "bfloat16", 2, true, true, 256},
};

const TypeInfo& Info(bcclDataType_t t) { return kTypes[t]; }

const char* const kOpNames[bcclNumOps] = {"sum", "prod", "max", "min", "avg"};

void Store(bcclDataType_t t, void* base, size_t i, int64_t v) {
  switch (t) {
    case bcclInt8:
      static_cast<int8_t*>(base)[i] = static_cast<int8_t>(v);
      break;
    case bcclUint8:
      static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(v);
      break;
    case bcclInt32:
      static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v);
      break;
    case bcclUint32:
      static_cast<uint32_t*>(base)[i] = static_cast<uint32_t>(v);
      break;
    case bcclInt64:
      static_cast<int64_t*>(base)[i] = v;
      break;
    case bcclUint64:
      static_cast<uint64_t*>(base)[i] = static_cast<uint64_t>(v);
      break;
    case bcclFloat16:
      static_cast<uint16_t*>(base)[i] = FloatToHalf(static_cast<float>(v));
      break;
    case bcclFloat32:
      static_cast<float*>(base)[i] = static_cast<float>(v);
      break;
    case bcclFloat64:
      static_cast<double*>(base)[i] = static_cast<double>(v);
      break;
    case bcclBfloat16:
      static_cast<uint16_t*>(base)[i] = FloatToBfloat16(static_cast<float>(v));
      break;
    default:
      break;
  }
}

// For diagnostics and for comparing floats by value.
double LoadDouble(bcclDataType_t t, const void* base, size_t i) {
  switch (t) {
    case bcclInt8:
      return static_cast<const int8_t*>(base)[i];
    case bcclUint8:
      return static_cast<const uint8_t*>(base)[i];
    case bcclInt32:
      return static_cast<const int32_t*>(base)[i];
    case bcclUint32:
      return static_cast<const uint32_t*>(base)[i];
    case bcclInt64:
      return static_cast<double>(static_cast<const int64_t*>(base)[i]);
    case bcclUint64:
      return static_cast<double>(static_cast<const uint64_t*>(base)[i]);
    case bcclFloat16:
      return HalfToFloat(static_cast<const uint16_t*>(base)[i]);
    case bcclFloat32:
      return static_cast<const float*>(base)[i];
    case bcclFloat64:
      return static_cast<const double*>(base)[i];
    case bcclBfloat16:
      return Bfloat16ToFloat(static_cast<const uint16_t*>(base)[i]);
    default:
      return 0;
  }
}

std::string FormatElem(bcclDataType_t t, const void* base, size_t i) {
  char buf[64];
  const unsigned char* p = static_cast<const unsigned char*>(base) + i * Info(t).size;
  if (t == bcclInt64) {
    int64_t v;
    std::memcpy(&v, p, sizeof v);
    std::snprintf(buf, sizeof buf, "%" PRId64, v);
  } else if (t == bcclUint64) {
    uint64_t v;
    std::memcpy(&v, p, sizeof v);
    std::snprintf(buf, sizeof buf, "%" PRIu64, v);
  } else {
    std::snprintf(buf, sizeof buf, "%.17g", LoadDouble(t, base, i));
  }
  return buf;
}

// Integers must match bit for bit. Floats too, except that +0 and -0 are the same result.
bool SameElem(bcclDataType_t t, const void* a, const void* b, size_t i) {
  const size_t ts = Info(t).size;
  if (std::memcmp(static_cast<const char*>(a) + i * ts, static_cast<const char*>(b) + i * ts, ts) ==
      0) {
    return true;
  }
  return Info(t).is_float && LoadDouble(t, a, i) == LoadDouble(t, b, i);
}

// ---- input values -----------------------------------------------------------------------------

uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9E3779B97F4A7C15ull + b * 0xC2B2AE3D27D4EB4Full + 0x165667B19E3779F9ull;
  x ^= x >> 32;
  x *= 0xD6E8FEB86659FD93ull;
  x ^= x >> 32;
  return x;
}

// Salts far from any rank number, so per-index choices are independent of per-rank values.
constexpr uint64_t kSaltTwos = ~uint64_t{0};
constexpr uint64_t kSaltSign = ~uint64_t{1};
constexpr uint64_t kSaltBase = ~uint64_t{2};
constexpr uint64_t kSaltDelta = ~uint64_t{3};

// A value in [-m, m] (signed) or [0, m]. Unsigned arithmetic because 2m+1 may exceed INT64_MAX.
int64_t Spread(uint64_t h, int64_t m, bool is_signed) {
  if (m <= 0) return 0;
  const uint64_t um = static_cast<uint64_t>(m);
  if (!is_signed) return static_cast<int64_t>(h % (um + 1));
  return static_cast<int64_t>(h % (2 * um + 1) - um);
}

}  // namespace

Inputs::Inputs(bcclDataType_t dtype, bool reduces, bcclRedOp_t op, int rank, int nranks, int root)
    : op_(op), rank_(rank), nranks_(nranks), root_(root) {
  const TypeInfo& t = Info(dtype);
  is_signed_ = t.is_signed;
  limit_ = t.limit;
  per_rank_ = limit_ / nranks;
  max_twos_ = 0;
  while (max_twos_ < 62 && (int64_t{1} << (max_twos_ + 1)) <= limit_) ++max_twos_;
  if (!reduces || op == bcclMax || op == bcclMin) {
    scheme_ = Scheme::kSpread;  // nothing accumulates, so the whole exact range is usable
  } else if (op == bcclProd) {
    scheme_ = Scheme::kProd;
  } else if (op == bcclAvg) {
    scheme_ = Scheme::kAvg;
  } else {
    scheme_ = Scheme::kSum;
  }
}

int64_t Inputs::At(int rank, size_t index) const {
  const uint64_t r = static_cast<uint64_t>(rank);
  switch (scheme_) {
    case Scheme::kSpread:
      return Spread(Mix(r, index), limit_, is_signed_);
    case Scheme::kSum:
      // Any partial sum is bounded by nranks * per_rank_ <= limit_, so every summation order is
      // exact, including for half and bfloat16.
      return Spread(Mix(r, index), per_rank_, is_signed_);
    case Scheme::kProd: {
      // Element `index` gets factors of 2 from `twos` consecutive ranks (starting at rank
      // index % n) and 1 elsewhere; signed types sometimes negate one factor. The product is
      // +-2^twos, exact in every type.
      const uint64_t n = static_cast<uint64_t>(nranks_);
      const uint64_t k = std::min<uint64_t>(static_cast<uint64_t>(max_twos_), n);
      const uint64_t twos = Mix(kSaltTwos, index) % (k + 1);
      const uint64_t slot = (r + n - index % n) % n;
      int64_t v = slot < twos ? 2 : 1;
      if (is_signed_ && slot == 0 && (Mix(kSaltSign, index) & 1u)) v = -v;
      return v;
    }
    case Scheme::kAvg: {
      // Ranks come in pairs holding base+d and base-d (an odd last rank holds base), so the
      // sum is exactly nranks*base and the average is base in every type with no rounding
      // question, while each rank's data still differs.
      const int64_t base = Spread(Mix(kSaltBase, index), per_rank_ / 2, is_signed_);
      const int64_t abs_base = base < 0 ? -base : base;
      const int64_t room = is_signed_ ? per_rank_ - abs_base : std::min(base, per_rank_ - base);
      const int64_t d =
          static_cast<int64_t>(Mix(kSaltDelta, index) % (static_cast<uint64_t>(room) + 1));
      if (nranks_ % 2 == 1 && rank == nranks_ - 1) return base;
      return rank % 2 == 0 ? base + d : base - d;
    }
  }
  return 0;
}

int64_t Inputs::Reduced(size_t index) const {
  int64_t acc = At(0, index);
  for (int r = 1; r < nranks_; ++r) {
    const int64_t v = At(r, index);
    switch (op_) {
      case bcclProd:
        acc *= v;
        break;
      case bcclMax:
        acc = std::max(acc, v);
        break;
      case bcclMin:
        acc = std::min(acc, v);
        break;
      default:
        acc += v;
        break;
    }
  }
  if (op_ == bcclAvg) acc /= nranks_;  // exact by construction; C division otherwise
  return acc;
}

Layout Collective::GetLayout(size_t count, int rank, int nranks) const {
  (void)rank;
  (void)nranks;
  Layout l;
  l.send_elems = count;
  l.recv_elems = count;
  return l;
}

namespace {

// ---- errors -----------------------------------------------------------------------------------

bcclComm_t g_comm = nullptr;
int g_rank = -1;

// Any failed bccl call ends the run: the numbers after a failure would mean nothing. Aborting
// the communicator lets the other ranks fail fast instead of waiting for a timeout.
[[noreturn]] void Fail(const char* what, bcclResult_t r, const char* file, int line) {
  // The communicator's message names the failing peer; the thread's covers calls that take no
  // communicator (stream synchronize) and failures before the communicator exists.
  const std::string comm_msg = g_comm ? bcclGetLastError(g_comm) : "";
  const std::string thread_msg = bcclGetLastError(nullptr);
  std::string detail = comm_msg.empty() ? thread_msg : comm_msg;
  if (!comm_msg.empty() && !thread_msg.empty() && comm_msg != thread_msg) {
    detail += " / " + thread_msg;
  }
  const std::string who = g_rank >= 0 ? std::to_string(g_rank) : "?";
  std::fprintf(stderr, "rank %s: %s failed at %s:%d: %s (%d): %s\n", who.c_str(), what, file, line,
               bcclGetErrorString(r), static_cast<int>(r), detail.c_str());
  std::fflush(stderr);
  if (g_comm) bcclCommAbort(g_comm);
  std::exit(1);
}

#define PERF_CHECK(call)                                                  \
  do {                                                                    \
    const bcclResult_t perf_r_ = (call);                                  \
    if (perf_r_ != bcclSuccess) Fail(#call, perf_r_, __FILE__, __LINE__); \
  } while (0)

// ---- options ----------------------------------------------------------------------------------

struct Options {
  size_t min_bytes = size_t{32} << 20;
  size_t max_bytes = size_t{32} << 20;
  size_t step_bytes = size_t{1} << 20;
  size_t step_factor = 1;
  int iters = 20;
  int warmup = 5;
  bool check = true;
  std::vector<bcclDataType_t> dtypes{bcclFloat};
  std::vector<bcclRedOp_t> ops{bcclSum};
  int root = 0;
  bool blocking = false;
};

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
  while ((c = getopt_long(argc, argv, "b:e:i:f:n:w:c:d:o:r:z:h", kLong, nullptr)) != -1) {
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

// ---- buffers ----------------------------------------------------------------------------------

// Host buffers with guard bytes on both sides, so a collective that writes outside the buffer it
// was given shows up as #wrong rather than as silent heap damage.
class GuardedBuffer {
 public:
  static constexpr size_t kGuard = 64;
  static constexpr unsigned char kGuardByte = 0xA5;

  bool Allocate(size_t bytes) {
    const size_t body = (bytes + kGuard - 1) / kGuard * kGuard;
    base_ = static_cast<unsigned char*>(std::aligned_alloc(kGuard, body + 2 * kGuard));
    return base_ != nullptr;
  }
  ~GuardedBuffer() { std::free(base_); }
  unsigned char* data() const { return base_ + kGuard; }

  // Rows use a prefix of the buffer, so the trailing guard moves with the row's size.
  void Arm(size_t used) const {
    std::memset(base_, kGuardByte, kGuard);
    std::memset(data() + used, kGuardByte, kGuard);
  }
  int64_t Broken(size_t used) const {
    int64_t n = 0;
    for (size_t i = 0; i < kGuard; ++i) {
      n += base_[i] != kGuardByte;
      n += data()[used + i] != kGuardByte;
    }
    return n;
  }

 private:
  unsigned char* base_ = nullptr;
};

// ---- the run ----------------------------------------------------------------------------------

struct CellResult {
  double time_us = 0;
  int64_t wrong = 0;
};

class Runner {
 public:
  Runner(const Collective& coll, const Options& opt, bcclComm_t comm, int rank, int nranks,
         bcclStream_t stream)
      : coll_(coll), opt_(opt), comm_(comm), rank_(rank), nranks_(nranks), stream_(stream) {}

  bool AllocateFor(const std::vector<std::vector<size_t>>& counts_per_dtype);
  // Runs and prints one row; adds to the totals.
  void Row(bcclDataType_t dtype, bcclRedOp_t op, const Inputs& in, size_t count);

  int64_t total_wrong() const { return total_wrong_; }
  double avg_busbw() const { return bw_cells_ ? bw_sum_ / bw_cells_ : 0.0; }

 private:
  CellResult Cell(bool in_place, bcclDataType_t dtype, bcclRedOp_t op, const Inputs& in,
                  size_t count, const Layout& lay);
  void Launch(const Call& call) const {
    const bcclResult_t r = coll_.Run(call);
    if (r != bcclSuccess) {
      char what[128];
      std::snprintf(what, sizeof what, "%s(count=%zu, %s%s%s)", coll_.Name(), call.count,
                    Info(call.dtype).name, coll_.UsesOp() ? ", " : "",
                    coll_.UsesOp() ? kOpNames[call.op] : "");
      Fail(what, r, __FILE__, __LINE__);
    }
  }
  void Sync() const {
    if (stream_) PERF_CHECK(bcclStreamSynchronize(stream_));
  }
  void Fill(const Inputs& in, bcclDataType_t dtype, void* p, size_t elems) const {
    for (size_t i = 0; i < elems; ++i) Store(dtype, p, i, in.At(rank_, i));
  }
  int64_t Verify(bool in_place, bcclDataType_t dtype, bcclRedOp_t op, const Inputs& in,
                 size_t count, const Layout& lay, const Call& call);

  const Collective& coll_;
  const Options& opt_;
  bcclComm_t comm_;
  int rank_, nranks_;
  bcclStream_t stream_;
  GuardedBuffer send_, recv_, inplace_;
  std::vector<unsigned char> expected_;
  std::vector<bool> checked_;
  int64_t total_wrong_ = 0;
  double bw_sum_ = 0;
  int bw_cells_ = 0;
};

bool Runner::AllocateFor(const std::vector<std::vector<size_t>>& counts_per_dtype) {
  size_t send_max = 0, recv_max = 0, inplace_max = 0;
  for (size_t t = 0; t < opt_.dtypes.size(); ++t) {
    const size_t ts = Info(opt_.dtypes[t]).size;
    for (size_t count : counts_per_dtype[t]) {
      const Layout l = coll_.GetLayout(count, rank_, nranks_);
      send_max = std::max(send_max, l.send_elems * ts);
      recv_max = std::max(recv_max, l.recv_elems * ts);
      inplace_max = std::max(inplace_max, std::max(l.send_elems, l.recv_elems) * ts);
    }
  }
  if (!send_.Allocate(send_max) || !recv_.Allocate(recv_max) || !inplace_.Allocate(inplace_max)) {
    return false;
  }
  if (opt_.check) {
    try {
      expected_.resize(recv_max);
      checked_.resize(recv_max);
    } catch (const std::bad_alloc&) {
      return false;
    }
  }
  return true;
}

CellResult Runner::Cell(bool in_place, bcclDataType_t dtype, bcclRedOp_t op, const Inputs& in,
                        size_t count, const Layout& lay) {
  const size_t ts = Info(dtype).size;
  Call call{};
  if (in_place) {
    call.send = inplace_.data() + lay.in_place_send_offset * ts;
    call.recv = inplace_.data() + lay.in_place_recv_offset * ts;
  } else {
    call.send = send_.data();
    call.recv = recv_.data();
  }
  call.count = count;
  call.dtype = dtype;
  call.op = op;
  call.root = opt_.root;
  call.rank = rank_;
  call.nranks = nranks_;
  call.comm = comm_;
  call.stream = stream_;

  // Real data rather than zeros: reductions over denormals or all-equal values can run at a
  // different speed than the traffic the numbers are meant to describe.
  Fill(in, dtype, const_cast<void*>(call.send), lay.send_elems);

  for (int i = 0; i < opt_.warmup; ++i) Launch(call);
  Sync();
  PERF_CHECK(bcclBarrier(comm_, nullptr));

  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < opt_.iters; ++i) Launch(call);
  Sync();
  const auto t1 = std::chrono::steady_clock::now();

  CellResult res;
  res.time_us = std::chrono::duration<double, std::micro>(t1 - t0).count() / opt_.iters;
  if (opt_.check) res.wrong = Verify(in_place, dtype, op, in, count, lay, call);
  return res;
}

// One more call on freshly written inputs, timed loop results discarded: in-place loops have
// overwritten their input many times over by now.
int64_t Runner::Verify(bool in_place, bcclDataType_t dtype, bcclRedOp_t op, const Inputs& in,
                       size_t count, const Layout& lay, const Call& call) {
  const size_t ts = Info(dtype).size;
  void* recv = call.recv;
  bool all_checked = true;
  for (size_t j = 0; j < lay.recv_elems; ++j) {
    int64_t v = 0;
    const bool has = coll_.Expected(in, count, j, &v);
    checked_[j] = has;
    all_checked &= has;
    if (has) Store(dtype, expected_.data(), j, v);
  }
  // Pre-fill the receive view with values that differ from the expected ones in one bit, so an
  // element the collective never writes cannot pass by luck. The send view is written after, as
  // in-place views overlap.
  for (size_t j = 0; j < lay.recv_elems; ++j) {
    unsigned char* dst = static_cast<unsigned char*>(recv) + j * ts;
    if (checked_[j]) {
      std::memcpy(dst, expected_.data() + j * ts, ts);
      dst[0] ^= 1u;
    } else {
      std::memset(dst, 0xCD, ts);
    }
  }
  Fill(in, dtype, const_cast<void*>(call.send), lay.send_elems);
  const size_t send_bytes = lay.send_elems * ts, recv_bytes = lay.recv_elems * ts;
  const size_t inplace_bytes = std::max(send_bytes, recv_bytes);
  if (in_place) {
    inplace_.Arm(inplace_bytes);
  } else {
    send_.Arm(send_bytes);
    recv_.Arm(recv_bytes);
  }

  Launch(call);
  Sync();

  int64_t wrong = 0;
  size_t first_bad = SIZE_MAX;
  if (!all_checked || std::memcmp(recv, expected_.data(), recv_bytes) != 0) {
    for (size_t j = 0; j < lay.recv_elems; ++j) {
      if (checked_[j] && !SameElem(dtype, recv, expected_.data(), j)) {
        ++wrong;
        if (first_bad == SIZE_MAX) first_bad = j;
      }
    }
  }
  // An out-of-place collective must leave its input alone.
  int64_t send_changed = 0;
  if (!in_place) {
    unsigned char tmp[8];
    for (size_t i = 0; i < lay.send_elems; ++i) {
      Store(dtype, tmp, 0, in.At(rank_, i));
      send_changed +=
          std::memcmp(tmp, static_cast<const unsigned char*>(call.send) + i * ts, ts) != 0;
    }
  }
  const int64_t guards = in_place ? inplace_.Broken(inplace_bytes)
                                  : send_.Broken(send_bytes) + recv_.Broken(recv_bytes);

  if (wrong || send_changed || guards) {
    // One line per rank and cell: enough to start a bug report without flooding the table.
    std::fprintf(stderr, "# rank %d: %s %s%s%s count %zu %s: %" PRId64 " wrong", rank_,
                 coll_.Name(), Info(dtype).name, coll_.UsesOp() ? " " : "",
                 coll_.UsesOp() ? kOpNames[op] : "", count, in_place ? "in-place" : "out-of-place",
                 wrong);
    if (first_bad != SIZE_MAX) {
      std::fprintf(stderr, " (first at recv[%zu]: got %s, expected %s)", first_bad,
                   FormatElem(dtype, recv, first_bad).c_str(),
                   FormatElem(dtype, expected_.data(), first_bad).c_str());
    }
    std::fprintf(stderr,
                 ", %" PRId64 " send elements modified, %" PRId64 " guard bytes overwritten\n",
                 send_changed, guards);
  }
  return wrong + send_changed + guards;
}

std::string TimeStr(double us) {
  char b[32];
  std::snprintf(b, sizeof b, us >= 1e4 ? "%7.0f" : us >= 100 ? "%7.1f" : "%7.2f", us);
  return b;
}

void Runner::Row(bcclDataType_t dtype, bcclRedOp_t op, const Inputs& in, size_t count) {
  const Layout lay = coll_.GetLayout(count, rank_, nranks_);
  const bool has_in_place = coll_.HasInPlace();
  CellResult cells[2];
  cells[0] = Cell(false, dtype, op, in, count, lay);
  if (has_in_place) cells[1] = Cell(true, dtype, op, in, count, lay);

  // The slowest rank defines the collective's time; wrong elements count on every rank.
  double times[2] = {cells[0].time_us, cells[1].time_us};
  int64_t wrong[2] = {cells[0].wrong, cells[1].wrong};
  PERF_CHECK(bcclAllReduce(times, times, 2, bcclFloat64, bcclMax, comm_, nullptr));
  PERF_CHECK(bcclAllReduce(wrong, wrong, 2, bcclInt64, bcclSum, comm_, nullptr));

  const size_t size = count * Info(dtype).size * coll_.SizeElemsPerCount(nranks_);
  if (rank_ == 0) {
    std::printf("%12zu  %12zu  %8s  %6s  %6d", size, count, Info(dtype).name,
                coll_.UsesOp() ? kOpNames[op] : "none", coll_.UsesRoot() ? opt_.root : -1);
  }
  for (int c = 0; c < 2; ++c) {
    if (c == 1 && !has_in_place) {
      if (rank_ == 0) std::printf("  %7s  %6s  %6s  %6s", "N/A", "N/A", "N/A", "N/A");
      continue;
    }
    const double algbw = times[c] > 0 ? static_cast<double>(size) / 1e3 / times[c] : 0.0;
    const double busbw = algbw * coll_.BusFactor(nranks_);
    bw_sum_ += busbw;
    ++bw_cells_;
    total_wrong_ += wrong[c];
    if (rank_ == 0) {
      char w[32];
      if (opt_.check) {
        std::snprintf(w, sizeof w, "%" PRId64, wrong[c]);
      } else {
        std::snprintf(w, sizeof w, "N/A");
      }
      std::printf("  %s  %6.2f  %6.2f  %6s", TimeStr(times[c]).c_str(), algbw, busbw, w);
    }
  }
  if (rank_ == 0) {
    std::printf("\n");
    std::fflush(stdout);
  }
}

std::string Center(const char* text, int width) {
  const int len = static_cast<int>(std::strlen(text));
  const int left = std::max(0, (width - len) / 2);
  return std::string(left, ' ') + text + std::string(std::max(0, width - len - left), ' ');
}

// Prints one header line without the trailing blanks that padding leaves.
void PrintLine(std::string line) {
  line.erase(line.find_last_not_of(' ') + 1);
  std::printf("%s\n", line.c_str());
}

std::string Fmt(const char* fmt, const char* a, const char* b, const char* c, const char* d,
                const char* e = nullptr) {
  char buf[128];
  std::snprintf(buf, sizeof buf, fmt, a, b, c, d, e);
  return buf;
}

void PrintTableHeader() {
  // Widths follow the row format: 52 columns of row description, then two 33-column cells.
  const char* kCell = "  %7s  %6s  %6s  %6s";
  PrintLine("#");
  PrintLine("#" + std::string(51, ' ') + Center("out-of-place", 33) + Center("in-place", 33));
  std::string names = Fmt("#%11s  %12s  %8s  %6s  %6s", "size", "count", "type", "redop", "root");
  std::string units = Fmt("#%11s  %12s  %8s  %6s  %6s", "(B)", "(elements)", "", "", "");
  for (int c = 0; c < 2; ++c) {
    names += Fmt(kCell, "time", "algbw", "busbw", "#wrong");
    units += Fmt(kCell, "(us)", "(GB/s)", "(GB/s)", "");
  }
  PrintLine(names);
  PrintLine(units);
}

struct RankInfo {
  int32_t pid;
  char host[60];
};

void PrintHeader(const Collective& coll, const Options& o, bcclComm_t comm, int rank, int nranks,
                 const char* prog) {
  RankInfo mine{};
  mine.pid = static_cast<int32_t>(getpid());
  if (gethostname(mine.host, sizeof mine.host - 1) != 0) std::strcpy(mine.host, "?");
  std::vector<RankInfo> all(static_cast<size_t>(nranks));
  PERF_CHECK(bcclAllGather(&mine, all.data(), sizeof(RankInfo), bcclUint8, comm, nullptr));
  if (rank != 0) return;

  int version = 0;
  PERF_CHECK(bcclGetVersion(&version));
  const char* transport = std::getenv("BCCL_TRANSPORT");
  const char* slash = std::strrchr(prog, '/');
  std::printf("# %s (%s): bccl version %d.%d.%d (%d), nranks %d, BCCL_TRANSPORT %s\n",
              slash ? slash + 1 : prog, coll.Name(), version / 10000, version / 100 % 100,
              version % 100, version, nranks, transport && *transport ? transport : "(unset)");
  std::printf(
      "# minBytes %zu maxBytes %zu step: %zu(%s) warmup iters: %d iters: %d "
      "validation: %d blocking: %d\n",
      o.min_bytes, o.max_bytes, o.step_factor > 1 ? o.step_factor : o.step_bytes,
      o.step_factor > 1 ? "factor" : "bytes", o.warmup, o.iters, o.check ? 1 : 0,
      o.blocking ? 1 : 0);
  std::printf("#\n# Using ranks\n");
  for (int r = 0; r < nranks; ++r) {
    all[r].host[sizeof all[r].host - 1] = '\0';
    std::printf("#  Rank %2d Pid %6d on %10s\n", r, static_cast<int>(all[r].pid), all[r].host);
  }
  // Rank 0's links, one line per distinct kind (with verbs: device, port, GID and MTU), so a
  // result can be told from one measured over another transport.
  std::vector<std::pair<std::string, int>> links;
  for (int r = 1; r < nranks; ++r) {
    char via[256] = "";
    if (bcclCommGetPeerTransport(comm, r, via, sizeof via) != bcclSuccess) continue;
    auto it =
        std::find_if(links.begin(), links.end(), [&](const auto& l) { return l.first == via; });
    if (it == links.end()) {
      links.emplace_back(via, 1);
    } else {
      ++it->second;
    }
  }
  for (const auto& [via, peers] : links)
    std::printf("# Transport: %s (%d peer%s of rank 0)\n", via.c_str(), peers,
                peers == 1 ? "" : "s");
  PrintTableHeader();
  std::fflush(stdout);
}

}  // namespace

int PerfMain(int argc, char** argv, const Collective& coll) {
  Options opt;
  const int parsed = ParseArgs(argc, argv, &opt);
  if (parsed == 1) return 0;
  if (parsed != 0) return parsed;

  bcclComm_t comm = nullptr;
  PERF_CHECK(bcclCommInitFromEnv(&comm, nullptr));
  g_comm = comm;
  int rank = 0, nranks = 0;
  PERF_CHECK(bcclCommUserRank(comm, &rank));
  PERF_CHECK(bcclCommCount(comm, &nranks));
  g_rank = rank;

  if (coll.UsesRoot() && opt.root >= nranks) {
    if (rank == 0) {
      std::fprintf(stderr, "%s: root %d out of range for %d ranks\n", argv[0], opt.root, nranks);
    }
    PERF_CHECK(bcclCommDestroy(comm));
    return 2;
  }
  bcclStream_t stream = nullptr;
  if (!opt.blocking) PERF_CHECK(bcclStreamCreate(&stream));

  PrintHeader(coll, opt, comm, rank, nranks, argv[0]);

  const std::vector<size_t> sizes = Sizes(opt);
  std::vector<std::vector<size_t>> counts;
  for (bcclDataType_t t : opt.dtypes) {
    counts.push_back(Counts(sizes, Info(t).size * coll.SizeElemsPerCount(nranks)));
  }
  // Every rank must agree to go on, or the ones that could allocate would wait for the others.
  Runner runner(coll, opt, comm, rank, nranks, stream);
  int32_t ok = runner.AllocateFor(counts) ? 1 : 0;
  if (!ok) std::fprintf(stderr, "rank %d: cannot allocate buffers for the largest size\n", rank);
  PERF_CHECK(bcclAllReduce(&ok, &ok, 1, bcclInt32, bcclMin, comm, nullptr));
  if (!ok) {
    if (stream) PERF_CHECK(bcclStreamDestroy(stream));
    PERF_CHECK(bcclCommDestroy(comm));
    return 1;
  }

  const std::vector<bcclRedOp_t> no_op{bcclSum};
  const std::vector<bcclRedOp_t>& ops = coll.UsesOp() ? opt.ops : no_op;
  for (size_t t = 0; t < opt.dtypes.size(); ++t) {
    for (bcclRedOp_t op : ops) {
      const Inputs in(opt.dtypes[t], coll.UsesOp(), op, rank, nranks, opt.root);
      for (size_t count : counts[t]) runner.Row(opt.dtypes[t], op, in, count);
    }
  }

  if (rank == 0) {
    std::printf("# Out of bounds values : %" PRId64 " %s\n", runner.total_wrong(),
                runner.total_wrong() ? "FAILED" : "OK");
    std::printf("# Avg bus bandwidth    : %g \n#\n", runner.avg_busbw());
    std::fflush(stdout);
  }
  if (stream) PERF_CHECK(bcclStreamDestroy(stream));
  PERF_CHECK(bcclCommDestroy(comm));
  g_comm = nullptr;
  return runner.total_wrong() ? 1 : 0;
}

}  // namespace bcclperf
