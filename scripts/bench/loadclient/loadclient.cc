// The compiled stream load client: one process drives many long-lived bidirectional streams
// (the controller's AgentService/Heartbeat, or etcd's Lease/LeaseKeepAlive) from a few threads.
//
// Each thread owns a gRPC completion queue, a share of the channels (one TCP connection each)
// and the streams on them, and runs one event loop: completion-queue events (a call started, a
// write done, a message read, a call finished) and a heap of timers (a stream's next beat is
// due, a broken stream is to be reopened). No thread per stream, no task per beat.
//
// Protocol with the harness (scripts/bench/cppclient.py), one JSON object per line on stdout:
//   -> {"event": "opened", "opened": N, "failed": M, "seconds": S}   every stream tried once
//   <- "window START END\n" on stdin (CLOCK_MONOTONIC seconds: Python's time.monotonic())
//   -> {"event": "result", ...}                                        at END + grace
// Latency is measured from the moment a beat was *scheduled* to its ack (no coordinated
// omission): a stream whose previous beat is unacknowledged owes the beat and sends it right
// after that ack. A paced stream's beats start a random fraction of an interval after its own
// open (the closed loop starts once every stream was tried). A stream that breaks is reopened
// after a jittered pause (0.5-1.5 s); the beats it misses meanwhile are not sent. Streams that
// could not be opened in the open phase are left out of the run, as the Python client does
// (scripts/bench/streams.py, pacer.py).
//
// Built by scripts/bench/loadclient/Makefile (run on demand by cppclient.py).

#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "heartbeat_wire.grpc.pb.h"
#include "etcd_lease.grpc.pb.h"

namespace {

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double CpuSeconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

void SleepUntil(double t) {
  double left = t - Now();
  if (left > 0) std::this_thread::sleep_for(std::chrono::duration<double>(left));
}

struct Config {
  std::string protocol = "controller";  // or "etcd"
  std::string address;
  std::string idents_path;
  std::string mode = "paced";  // or "closed"
  double interval_s = 10.0;
  int threads = 2;
  int streams_per_channel = 500;
  int open_concurrency = 200;  // stream opens in flight per process
  double open_timeout_s = 300.0;
  double open_one_timeout_s = 60.0;
  double grace_s = 2.0;
  uint64_t seed = 1;
};

struct Ident {
  std::string id;
  std::string token;
};

// Latencies in microseconds, HDR-style: exact below 128 us, then 64 sub-buckets per power of
// two (under 1.6 % error).
class Histogram {
 public:
  static constexpr int kBuckets = 128 + 64 * 58;
  Histogram() : counts_(kBuckets, 0) {}

  void Record(double seconds) {
    double us = seconds * 1e6;
    uint64_t v = us <= 0 ? 0 : static_cast<uint64_t>(us);
    counts_[Index(v)]++;
  }

  void Merge(const Histogram& other) {
    for (int i = 0; i < kBuckets; i++) counts_[i] += other.counts_[i];
  }

  // [[microseconds (the bucket's middle), count], ...] for the non-empty buckets.
  std::string Json() const {
    std::ostringstream out;
    out << "[";
    bool first = true;
    for (int i = 0; i < kBuckets; i++) {
      if (!counts_[i]) continue;
      out << (first ? "" : ",") << "[" << Middle(i) << "," << counts_[i] << "]";
      first = false;
    }
    out << "]";
    return out.str();
  }

 private:
  static int Index(uint64_t v) {
    if (v < 128) return static_cast<int>(v);
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6;  // v >> shift is in [64, 128)
    int index = 128 + (shift - 1) * 64 + static_cast<int>((v >> shift) - 64);
    return index < kBuckets ? index : kBuckets - 1;
  }

  static double Middle(int i) {
    if (i < 128) return i + 0.5;
    int shift = (i - 128) / 64 + 1;
    double low = static_cast<double>((static_cast<uint64_t>((i - 128) % 64 + 64)) << shift);
    return low + static_cast<double>(1ULL << shift) / 2;
  }

  std::vector<uint64_t> counts_;
};

struct Stats {
  int64_t opened_total = 0;
  int64_t errors = 0;
  int64_t reconnects = 0;
  int64_t sent_in_window = 0;  // beats due in the window: sent, or owed behind an unacked one
  int64_t acked_in_window = 0;
  int64_t sent_total = 0;   // beats, in and out of the window (a server far behind acks
  int64_t acked_total = 0;  // none in the window, but may ack later ones)
  std::map<std::string, int64_t> error_kinds;
  Histogram latencies;

  void Error(const std::string& kind) {
    errors++;
    error_kinds[kind]++;
  }

  void Merge(const Stats& o) {
    opened_total += o.opened_total;
    errors += o.errors;
    reconnects += o.reconnects;
    sent_in_window += o.sent_in_window;
    acked_in_window += o.acked_in_window;
    sent_total += o.sent_total;
    acked_total += o.acked_total;
    for (const auto& [k, n] : o.error_kinds) error_kinds[k] += n;
    latencies.Merge(o.latencies);
  }
};

// What the process shares between its threads.
struct Shared {
  std::atomic<bool> pacing{false};  // the open phase is over: held streams start beating
  std::atomic<bool> stop{false};
  std::atomic<double> window_start{INFINITY};
  std::atomic<double> window_end{INFINITY};
  std::atomic<int64_t> open_now{0};
  std::atomic<int> opening_done{0};  // threads whose streams were each tried once
  std::atomic<int64_t> opened{0};
  std::atomic<int64_t> failed{0};
  std::mutex mu;
  Stats stats;  // merged under mu by each thread when it stops
  std::atomic<int> stopped{0};

  bool InWindow(double t) const { return window_start.load() <= t && t < window_end.load(); }
};

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK: return "OK";
    case grpc::CANCELLED: return "CANCELLED";
    case grpc::UNKNOWN: return "UNKNOWN";
    case grpc::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND: return "NOT_FOUND";
    case grpc::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::ABORTED: return "ABORTED";
    case grpc::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::INTERNAL: return "INTERNAL";
    case grpc::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::DATA_LOSS: return "DATA_LOSS";
    case grpc::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

// What a response means to the stream that read it.
enum class Reply { kSession, kAck, kEither, kEnd, kIgnore };

// The controller's heartbeat: AgentHello first (with the node's agent token as a bearer
// token), SessionStart back; then Beat -> BeatAck. A Reconnect ends the stream.
struct ControllerProtocol {
  using Stub = automator67::v1::AgentService::Stub;
  using Request = automator67::v1::HeartbeatRequest;
  using Response = automator67::v1::HeartbeatResponse;

  static std::unique_ptr<Stub> NewStub(const std::shared_ptr<grpc::Channel>& channel) {
    return automator67::v1::AgentService::NewStub(channel);
  }
  static std::unique_ptr<grpc::ClientAsyncReaderWriter<Request, Response>> Prepare(
      Stub* stub, grpc::ClientContext* ctx, grpc::CompletionQueue* cq) {
    return stub->PrepareAsyncHeartbeat(ctx, cq);
  }
  static void Metadata(grpc::ClientContext* ctx, const Ident& ident) {
    if (!ident.token.empty()) ctx->AddMetadata("authorization", "Bearer " + ident.token);
  }
  static void First(Request* req, const Ident& ident) {
    req->Clear();
    auto* hello = req->mutable_hello();
    hello->set_node_id(ident.id);
    hello->set_agent_version("bench");
    hello->add_drivers("simulated");
  }
  static void Beat(Request* req, const Ident&, uint64_t sequence) {
    req->Clear();
    auto* beat = req->mutable_beat();
    beat->set_sequence(sequence);
    auto* load = beat->mutable_load();
    load->set_cpu_percent(12.5);
    load->set_memory_used_gb(1.5);
    load->set_disk_used_gb(10);
  }
  static Reply Classify(const Response& r) {
    switch (r.kind_case()) {
      case Response::kSession: return Reply::kSession;
      case Response::kAck: return Reply::kAck;
      case Response::kReconnect: return Reply::kEnd;
      default: return Reply::kIgnore;  // assignments
    }
  }
};

// etcd's LeaseKeepAlive: etcd answers nothing before the first keepalive, so opening the
// stream includes one keepalive round trip; a TTL <= 0 says the lease expired.
struct EtcdProtocol {
  using Stub = etcdserverpb::Lease::Stub;
  using Request = etcdserverpb::LeaseKeepAliveRequest;
  using Response = etcdserverpb::LeaseKeepAliveResponse;

  static std::unique_ptr<Stub> NewStub(const std::shared_ptr<grpc::Channel>& channel) {
    return etcdserverpb::Lease::NewStub(channel);
  }
  static std::unique_ptr<grpc::ClientAsyncReaderWriter<Request, Response>> Prepare(
      Stub* stub, grpc::ClientContext* ctx, grpc::CompletionQueue* cq) {
    return stub->PrepareAsyncLeaseKeepAlive(ctx, cq);
  }
  static void Metadata(grpc::ClientContext*, const Ident&) {}
  static void First(Request* req, const Ident& ident) {
    req->set_id(std::strtoll(ident.id.c_str(), nullptr, 10));
  }
  static void Beat(Request* req, const Ident& ident, uint64_t) { First(req, ident); }
  static Reply Classify(const Response& r) { return r.ttl() > 0 ? Reply::kEither : Reply::kEnd; }
};

enum class Op : uint8_t { kStart, kWrite, kRead, kFinish };

class Worker;

class StreamBase {
 public:
  struct Tag {
    StreamBase* stream;
    Op op;
  };
  virtual ~StreamBase() = default;
  virtual void OnEvent(Op op, bool ok) = 0;
  virtual void Open() = 0;
  virtual void Beat(double scheduled) = 0;
  virtual void Cancel(const char* reason) = 0;

  enum class State { kIdle, kOpening, kOpen, kEnding, kFailed };
  State state = State::kIdle;
  bool held = false;     // opened in the open phase: part of the run
  bool settled = false;  // its first open succeeded or failed
  uint32_t index = 0;    // in its worker's streams
  double opening_since = 0;
};

// The one event loop of a thread.
class Worker {
 public:
  Worker(const Config& config, Shared* shared, int index)
      : config_(config), shared_(shared), rng_(config.seed * 7919 + index) {}

  grpc::CompletionQueue* cq() { return &cq_; }
  Stats& stats() { return stats_; }
  Shared& shared() { return *shared_; }
  const Config& config() const { return config_; }

  void Add(std::unique_ptr<StreamBase> stream) {
    stream->index = static_cast<uint32_t>(streams_.size());
    streams_.push_back(std::move(stream));
  }

  double Jitter(double low, double high) {
    return std::uniform_real_distribution<double>(low, high)(rng_);
  }

  void Schedule(double at, uint32_t index, bool reopen) { timers_.push({at, index, reopen}); }

  // A stream finished its first open (success or not): open the next one.
  void OpenSettled(StreamBase* stream, bool ok) {
    stream->settled = true;
    stream->held = ok;
    if (ok) {
      shared_->opened++;
    } else {
      shared_->failed++;
    }
    opening_--;
    settled_++;
    OpenMore();
  }

  bool Pacing() const { return pacing_; }

  void Run() {
    OpenMore();
    CheckOpened();
    double next_sweep = Now() + 1.0;
    while (true) {
      double now = Now();
      if (shared_->stop.load()) break;
      if (!pacing_ && shared_->pacing.load()) StartPacing(now);
      while (!timers_.empty() && timers_.top().at <= now) {
        Timer t = timers_.top();
        timers_.pop();
        StreamBase* s = streams_[t.index].get();
        if (t.reopen) {
          s->Open();
          continue;
        }
        timers_.push({t.at + config_.interval_s, t.index, false});
        s->Beat(t.at);
      }
      if (now >= next_sweep) {
        SweepOpening(now);
        next_sweep = now + 1.0;
      }
      double wake = now + 0.1;
      if (!timers_.empty() && timers_.top().at < wake) wake = timers_.top().at;
      void* tag = nullptr;
      bool ok = false;
      auto deadline = std::chrono::system_clock::now() +
                      std::chrono::microseconds(static_cast<int64_t>((wake - now) * 1e6) + 1);
      auto status = cq_.AsyncNext(&tag, &ok, deadline);
      while (status == grpc::CompletionQueue::GOT_EVENT) {
        auto* t = static_cast<StreamBase::Tag*>(tag);
        t->stream->OnEvent(t->op, ok);
        // Drain what is ready without waiting, then look at the timers again.
        status = cq_.AsyncNext(&tag, &ok, std::chrono::system_clock::time_point());
      }
      if (status == grpc::CompletionQueue::SHUTDOWN) break;
      CheckOpened();
    }
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      shared_->stats.Merge(stats_);
    }
    shared_->stopped++;
    for (auto& s : streams_) s->Cancel("stopping");
    // Let the cancellations reach the server; the process exits without tearing down.
    double until = Now() + 1.0;
    while (Now() < until) {
      void* tag = nullptr;
      bool ok = false;
      auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(50);
      if (cq_.AsyncNext(&tag, &ok, deadline) == grpc::CompletionQueue::SHUTDOWN) break;
    }
  }

 private:
  struct Timer {
    double at;
    uint32_t index;
    bool reopen;
    bool operator>(const Timer& o) const { return at > o.at; }
  };

  void OpenMore() {
    if (pacing_) return;  // the open phase is over: streams never tried are left out
    int limit = std::max(1, config_.open_concurrency / std::max(1, config_.threads));
    while (opening_ < limit && next_open_ < streams_.size()) {
      opening_++;
      streams_[next_open_++]->Open();
    }
  }

  void CheckOpened() {
    if (!reported_ && settled_ == streams_.size()) {
      reported_ = true;
      shared_->opening_done++;
    }
  }

  // Streams whose open takes longer than open_one_timeout_s (or past the open phase) give up.
  void SweepOpening(double now) {
    for (auto& s : streams_) {
      if (s->state != StreamBase::State::kOpening) continue;
      bool late = now - s->opening_since > config_.open_one_timeout_s;
      if (late || (!pacing_ && shared_->pacing.load() && !s->held)) s->Cancel("TimeoutError");
    }
  }

  void StartPacing(double now) {
    pacing_ = true;
    for (uint32_t i = 0; i < streams_.size(); i++) {
      StreamBase* s = streams_[i].get();
      if (!s->held) {
        if (s->state == StreamBase::State::kOpening) s->Cancel("TimeoutError");
        continue;
      }
      // Paced streams beat since their open; the closed loop starts now.
      if (config_.mode == "closed" && s->state == StreamBase::State::kOpen) s->Beat(now);
    }
  }

  const Config& config_;
  Shared* shared_;
  std::mt19937_64 rng_;
  grpc::CompletionQueue cq_;
  std::vector<std::unique_ptr<StreamBase>> streams_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  Stats stats_;
  int opening_ = 0;
  size_t next_open_ = 0;
  size_t settled_ = 0;
  bool reported_ = false;
  bool pacing_ = false;
};

template <class P>
class Stream : public StreamBase {
 public:
  Stream(Worker* worker, typename P::Stub* stub, Ident ident)
      : worker_(worker), stub_(stub), ident_(std::move(ident)) {
    tags_[0] = {this, Op::kStart};
    tags_[1] = {this, Op::kWrite};
    tags_[2] = {this, Op::kRead};
    tags_[3] = {this, Op::kFinish};
  }

  void Open() override {
    if (state_busy()) return;
    ctx_ = std::make_unique<grpc::ClientContext>();
    P::Metadata(ctx_.get(), ident_);
    call_ = P::Prepare(stub_, ctx_.get(), worker_->cq());
    state = State::kOpening;
    opening_since = Now();
    end_reason_.clear();
    beat_in_flight_ = false;
    owed_.clear();
    write_busy_ = write_wanted_ = false;
    pending_ = 1;
    call_->StartCall(&tags_[0]);
  }

  void Beat(double scheduled) override {
    if (state != State::kOpen) return;  // broken: the beats it misses are not sent
    // Due in the window when scheduled in it, sent or owed: a server far behind (acks later
    // than the window and its grace) loses the beats it never let the stream send.
    if (worker_->shared().InWindow(scheduled)) worker_->stats().sent_in_window++;
    if (beat_in_flight_) {
      owed_.push_back(scheduled);
      return;
    }
    Send(scheduled, true);
  }

  void Cancel(const char* reason) override {
    if (ctx_ && (state == State::kOpening || state == State::kOpen)) {
      if (end_reason_.empty()) end_reason_ = reason;
      ctx_->TryCancel();
    }
  }

  void OnEvent(Op op, bool ok) override {
    pending_--;
    switch (op) {
      case Op::kStart:
        if (!ok) {
          Finish();
          break;
        }
        P::First(&request_, ident_);
        Write();
        Read();
        break;
      case Op::kWrite:
        write_busy_ = false;
        if (!ok) {
          Cancel("write failed");  // the read fails next and finishes the call
        } else if (write_wanted_ && state == State::kOpen) {
          write_wanted_ = false;
          Write();
        }
        break;
      case Op::kRead:
        if (!ok) {
          Finish();
          break;
        }
        OnResponse();
        break;
      case Op::kFinish:
        finished_ = true;
        break;
    }
    if (state == State::kEnding && finished_ && pending_ == 0) Ended();
  }

 private:
  bool state_busy() const { return state == State::kOpening || state == State::kOpen ||
                                   state == State::kEnding; }

  // `due_counted`: Beat() counted it in sent_in_window already (paced beats, owed ones too).
  void Send(double scheduled, bool due_counted = false) {
    Stats& stats = worker_->stats();
    in_flight_scheduled_ = scheduled;
    in_flight_counted_ = worker_->shared().InWindow(scheduled);
    if (in_flight_counted_ && !due_counted) stats.sent_in_window++;
    stats.sent_total++;
    beat_in_flight_ = true;
    P::Beat(&request_, ident_, ++sequence_);
    if (write_busy_) {
      write_wanted_ = true;  // the previous write's completion sends it
    } else {
      Write();
    }
  }

  void Write() {
    write_busy_ = true;
    pending_++;
    call_->Write(request_, &tags_[1]);
  }

  void Read() {
    pending_++;
    call_->Read(&response_, &tags_[2]);
  }

  void Finish() {
    if (state == State::kEnding) return;
    was_open_ = state == State::kOpen;
    state = State::kEnding;
    finished_ = false;
    pending_++;
    call_->Finish(&status_, &tags_[3]);
  }

  void OnResponse() {
    Reply reply = P::Classify(response_);
    if (reply == Reply::kEnd) {
      Cancel("StreamEndedError");  // a Reconnect, an expired lease
      Read();                      // fails now, and finishes the call
      return;
    }
    if (state == State::kOpening && (reply == Reply::kSession || reply == Reply::kEither)) {
      if (!settled && worker_->Pacing()) {  // opened after the open phase: left out
        Cancel("TimeoutError");
        Read();
        return;
      }
      state = State::kOpen;
      worker_->shared().open_now++;
      Stats& stats = worker_->stats();
      stats.opened_total++;
      if (!settled) {
        worker_->OpenSettled(this, true);
        // Paced: its beats start one random fraction of an interval after its own open, not
        // after the whole open phase (50,000 opens take minutes: a lease would expire and a
        // node go SUSPECT meanwhile).
        if (worker_->config().mode == "paced") {
          worker_->Schedule(Now() + worker_->Jitter(0, worker_->config().interval_s), index,
                            false);
        }
      } else {
        stats.reconnects++;
        if (worker_->Pacing() && worker_->config().mode == "closed") Send(Now());
      }
    } else if (state == State::kOpen && (reply == Reply::kAck || reply == Reply::kEither) &&
               beat_in_flight_) {
      beat_in_flight_ = false;
      Stats& stats = worker_->stats();
      stats.acked_total++;
      if (in_flight_counted_) {
        stats.acked_in_window++;
        stats.latencies.Record(Now() - in_flight_scheduled_);
      }
      if (!owed_.empty()) {
        double next = owed_.front();
        owed_.pop_front();
        Send(next, true);
      } else if (worker_->config().mode == "closed") {
        Send(Now());
      }
    }
    Read();
  }

  // The call is over and no operation is pending: count why, and reopen it later.
  void Ended() {
    ctx_.reset();
    call_.reset();
    if (was_open_) worker_->shared().open_now--;
    bool stopping = worker_->shared().stop.load();
    if (!stopping) {
      std::string kind = end_reason_;
      if (kind.empty() || kind == "write failed") {
        kind = status_.ok() ? "StreamEndedError" : CodeName(status_.error_code());
      }
      worker_->stats().Error(kind);
    }
    state = State::kFailed;
    if (!settled) {
      worker_->OpenSettled(this, false);
      return;
    }
    if (held && !stopping) {
      state = State::kIdle;
      worker_->Schedule(Now() + worker_->Jitter(0.5, 1.5), index, true);
    }
  }

  Worker* worker_;
  typename P::Stub* stub_;
  Ident ident_;
  Tag tags_[4];
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<typename P::Request, typename P::Response>> call_;
  typename P::Request request_;
  typename P::Response response_;
  grpc::Status status_;
  std::string end_reason_;
  int pending_ = 0;
  bool finished_ = false;
  bool was_open_ = false;
  bool write_busy_ = false;
  bool write_wanted_ = false;
  bool beat_in_flight_ = false;
  bool in_flight_counted_ = false;
  double in_flight_scheduled_ = 0;
  std::deque<double> owed_;
  uint64_t sequence_ = 0;
};

std::vector<Ident> ReadIdents(const std::string& path) {
  std::vector<Ident> idents;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::istringstream fields(line);
    Ident ident;
    fields >> ident.id >> ident.token;
    idents.push_back(ident);
  }
  return idents;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

template <class P>
int RunProtocol(const Config& config, const std::vector<Ident>& idents) {
  Shared shared;
  int threads = std::max(1, config.threads);
  int spc = std::max(1, config.streams_per_channel);
  int channels = std::max<int>(1, (static_cast<int>(idents.size()) + spc - 1) / spc);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < threads; i++) workers.push_back(std::make_unique<Worker>(config, &shared, i));
  std::vector<std::unique_ptr<typename P::Stub>> stubs;
  for (int c = 0; c < channels; c++) {
    grpc::ChannelArguments args;
    // Its own subchannel pool: its own TCP connection (channels to one address share one by
    // default).
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 16 * 1024 * 1024);
    // No BDP pings: beats are tiny, the default windows suffice, and a server that polices
    // pings (grpc-go's, in etcd) may end a connection that sends them often with GOAWAY.
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    auto channel =
        grpc::CreateCustomChannel(config.address, grpc::InsecureChannelCredentials(), args);
    stubs.push_back(P::NewStub(channel));
  }
  // The streams of one channel live on one thread: channel c belongs to thread c % threads.
  for (size_t i = 0; i < idents.size(); i++) {
    int c = static_cast<int>(i / spc);
    Worker* w = workers[c % threads].get();
    w->Add(std::make_unique<Stream<P>>(w, stubs[c].get(), idents[i]));
  }
  double started = Now();
  double cpu_started = CpuSeconds();
  std::vector<std::thread> running;
  for (auto& w : workers) running.emplace_back([&w] { w->Run(); });

  double open_deadline = started + config.open_timeout_s;
  while (shared.opening_done.load() < threads && Now() < open_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  double open_s = Now() - started;
  shared.pacing = true;
  std::printf("{\"event\": \"opened\", \"opened\": %lld, \"failed\": %lld, \"seconds\": %.3f}\n",
              static_cast<long long>(shared.opened.load()),
              static_cast<long long>(idents.size() - shared.opened.load()), open_s);
  std::fflush(stdout);

  std::string line;
  double start = INFINITY, end = INFINITY;
  if (std::getline(std::cin, line)) {
    std::istringstream words(line);
    std::string word;
    words >> word;
    if (word == "window") words >> start >> end;
  }
  int64_t open_at_end = 0;
  double cpu_window = 0;
  if (std::isfinite(start) && std::isfinite(end)) {
    shared.window_start = start;
    shared.window_end = end;
    SleepUntil(start);
    double cpu0 = CpuSeconds();
    SleepUntil(end);
    open_at_end = shared.open_now.load();
    cpu_window = CpuSeconds() - cpu0;
    SleepUntil(end + config.grace_s);
  }
  shared.stop = true;
  double wait_until = Now() + 10;
  while (shared.stopped.load() < threads && Now() < wait_until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  std::lock_guard<std::mutex> lock(shared.mu);
  const Stats& s = shared.stats;
  std::ostringstream out;
  out << "{\"event\": \"result\", \"open_at_end\": " << open_at_end
      << ", \"opened_total\": " << s.opened_total << ", \"errors\": " << s.errors
      << ", \"reconnects\": " << s.reconnects << ", \"sent_in_window\": " << s.sent_in_window
      << ", \"acked_in_window\": " << s.acked_in_window << ", \"sent_total\": " << s.sent_total
      << ", \"acked_total\": " << s.acked_total << ", \"error_kinds\": {";
  bool first = true;
  for (const auto& [k, n] : s.error_kinds) {
    out << (first ? "" : ", ") << JsonString(k) << ": " << n;
    first = false;
  }
  out << "}, \"latency_us\": " << s.latencies.Json() << ", \"cpu_window_s\": " << cpu_window
      << ", \"cpu_total_s\": " << (CpuSeconds() - cpu_started)
      << ", \"max_rss_kb\": " << ru.ru_maxrss << ", \"threads\": " << threads
      << ", \"channels\": " << channels << ", \"streams\": " << idents.size() << "}\n";
  std::fputs(out.str().c_str(), stdout);
  std::fflush(stdout);
  // The threads cancel their streams for up to a second; then exit without tearing gRPC down.
  for (auto& t : running) t.detach();
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  std::_Exit(0);
}

void Usage() {
  std::fprintf(stderr,
               "usage: loadclient --protocol controller|etcd --address HOST:PORT --idents FILE\n"
               "  [--mode paced|closed] [--interval-s S] [--threads N] [--streams-per-channel N]\n"
               "  [--open-concurrency N] [--open-timeout-s S] [--grace-s S] [--seed N]\n"
               "FILE: one stream a line, `ident [token]` (node id and agent token, or lease id)\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  Config config;
  for (int i = 1; i < argc; i++) {
    std::string flag = argv[i];
    if (i + 1 >= argc) {
      Usage();
      return 2;
    }
    std::string value = argv[++i];
    if (flag == "--protocol") config.protocol = value;
    else if (flag == "--address") config.address = value;
    else if (flag == "--idents") config.idents_path = value;
    else if (flag == "--mode") config.mode = value;
    else if (flag == "--interval-s") config.interval_s = std::stod(value);
    else if (flag == "--threads") config.threads = std::stoi(value);
    else if (flag == "--streams-per-channel") config.streams_per_channel = std::stoi(value);
    else if (flag == "--open-concurrency") config.open_concurrency = std::stoi(value);
    else if (flag == "--open-timeout-s") config.open_timeout_s = std::stod(value);
    else if (flag == "--grace-s") config.grace_s = std::stod(value);
    else if (flag == "--seed") config.seed = std::stoull(value);
    else {
      Usage();
      return 2;
    }
  }
  if (config.address.empty() || config.idents_path.empty() ||
      (config.mode != "paced" && config.mode != "closed")) {
    Usage();
    return 2;
  }
  std::vector<Ident> idents = ReadIdents(config.idents_path);
  if (config.protocol == "controller") return RunProtocol<ControllerProtocol>(config, idents);
  if (config.protocol == "etcd") return RunProtocol<EtcdProtocol>(config, idents);
  Usage();
  return 2;
}
