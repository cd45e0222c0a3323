// The launcher environment (torchrun, mpirun, srun; partial and inconsistent variables) and
// the TCP rendezvous on 127.0.0.1 with threads: a 128-byte blob stands in for the NCCL id.
#include <gmock/gmock.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <future>
#include <thread>

#include "dist/bootstrap.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

using dist::Blob;
using dist::Env;
using dist::PeerInfo;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

// --- launcher environment ----------------------------------------------------------------

std::string env_error(const Env& env) {
  return error_of([&] { dist::launch_info(env); });
}

const Env kTorchrun = {{"RANK", "3"},           {"WORLD_SIZE", "8"},
                       {"LOCAL_RANK", "1"},     {"LOCAL_WORLD_SIZE", "2"},
                       {"MASTER_ADDR", "node0"}, {"MASTER_PORT", "29500"},
                       {"TORCHELASTIC_RUN_ID", "run-42"}};

Env with(Env env, const std::string& key, const std::string& value) {
  env[key] = value;
  return env;
}
Env without(Env env, const std::string& key) {
  env.erase(key);
  return env;
}

TEST(LaunchInfo, NoLauncherIsAWorldOfOne) {
  const dist::LaunchInfo info = dist::launch_info({{"HOME", "/root"}});
  EXPECT_EQ(info.launcher, "none");
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.world_size, 1);
  EXPECT_EQ(info.local_rank, 0);
  EXPECT_EQ(info.master_addr, "");
}

TEST(LaunchInfo, Torchrun) {
  const dist::LaunchInfo info = dist::launch_info(kTorchrun);
  EXPECT_EQ(info.launcher, "torchrun");
  EXPECT_EQ(info.rank, 3);
  EXPECT_EQ(info.world_size, 8);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.master_addr, "node0");
  EXPECT_EQ(info.master_port, 29500);
  EXPECT_EQ(info.bootstrap_port, 29500);
  EXPECT_EQ(info.job_token, "run-42");
  EXPECT_EQ(info.token_source, "TORCHELASTIC_RUN_ID");
}

TEST(LaunchInfo, TorchrunsAgentStoreKeepsMasterPortSoRankZeroTakesTheNext) {
  const Env env = with(kTorchrun, "TORCHELASTIC_USE_AGENT_STORE", "True");
  EXPECT_EQ(dist::launch_info(env).master_port, 29500);
  EXPECT_EQ(dist::launch_info(env).bootstrap_port, 29501);
  EXPECT_EQ(dist::launch_info(with(env, "REMOE_BOOTSTRAP_PORT", "40000")).bootstrap_port, 40000);
  EXPECT_EQ(dist::launch_info(with(kTorchrun, "TORCHELASTIC_USE_AGENT_STORE", "False"))
                .bootstrap_port, 29500);
  EXPECT_THAT(env_error(with(env, "MASTER_PORT", "65535")),
              HasSubstr("MASTER_PORT=65535 and the next port does not exist: set "
                        "REMOE_BOOTSTRAP_PORT"));
  EXPECT_THAT(env_error(with(env, "REMOE_BOOTSTRAP_PORT", "0")),
              HasSubstr("REMOE_BOOTSTRAP_PORT='0' is not a port in 1..65535"));
}

TEST(LaunchInfo, OpenMpi) {
  const Env env = {{"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_SIZE", "16"},
                   {"OMPI_COMM_WORLD_LOCAL_RANK", "5"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "8"},
                   {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "6000"},
                   {"PMIX_NAMESPACE", "prterun-node0-1234@1"}};
  const dist::LaunchInfo info = dist::launch_info(env);
  EXPECT_EQ(info.launcher, "mpirun");
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.world_size, 16);
  EXPECT_EQ(info.local_rank, 5);
  EXPECT_EQ(info.master_addr, "10.0.0.1");
  EXPECT_EQ(info.master_port, 6000);
  EXPECT_EQ(info.job_token, "prterun-node0-1234@1");
  // Open MPI 4 without PMIx names its job in an MCA variable instead.
  const dist::LaunchInfo v4 =
      dist::launch_info(with(without(env, "PMIX_NAMESPACE"), "OMPI_MCA_ess_base_jobid", "77"));
  EXPECT_EQ(v4.job_token, "77");
  EXPECT_EQ(v4.token_source, "OMPI_MCA_ess_base_jobid");
}

TEST(LaunchInfo, Slurm) {
  const Env env = {{"SLURM_PROCID", "2"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "0"},
                   {"SLURM_JOB_ID", "9001"}, {"SLURM_STEP_ID", "3"},
                   {"MASTER_ADDR", "gpu-17"}, {"MASTER_PORT", "29400"}};
  const dist::LaunchInfo info = dist::launch_info(env);
  EXPECT_EQ(info.launcher, "srun");
  EXPECT_EQ(info.rank, 2);
  EXPECT_EQ(info.world_size, 4);
  EXPECT_EQ(info.local_rank, 0);
  EXPECT_EQ(info.job_token, "9001.3");
  EXPECT_EQ(info.token_source, "SLURM_JOB_ID.SLURM_STEP_ID");
}

TEST(LaunchInfo, InnermostLauncherWinsAndTheJobTokenCanBeSet) {
  // torchrun started by srun on each node: the torchrun variables describe this process.
  Env env = kTorchrun;
  for (const auto& [k, v] : Env{{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"},
                                {"SLURM_LOCALID", "0"}, {"SLURM_JOB_ID", "5"}})
    env[k] = v;
  EXPECT_EQ(dist::launch_info(env).launcher, "torchrun");
  EXPECT_EQ(dist::launch_info(env).world_size, 8);
  const dist::LaunchInfo info = dist::launch_info(with(env, "REMOE_JOB_TOKEN", "mine"));
  EXPECT_EQ(info.job_token, "mine");
  EXPECT_EQ(info.token_source, "REMOE_JOB_TOKEN");
}

TEST(LaunchInfo, OneRankNeedsNoRendezvous) {
  const dist::LaunchInfo info = dist::launch_info(
      {{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"SLURM_LOCALID", "0"}});
  EXPECT_EQ(info.world_size, 1);
  EXPECT_EQ(info.master_addr, "");
}

TEST(LaunchInfo, PartialVariablesAreErrorsNamingThem) {
  EXPECT_THAT(env_error({{"RANK", "0"}}),
              HasSubstr("torchrun's variables are partial: RANK set but WORLD_SIZE, LOCAL_RANK "
                        "not"));
  EXPECT_THAT(env_error({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}}),
              HasSubstr("mpirun's variables are partial: OMPI_COMM_WORLD_RANK, "
                        "OMPI_COMM_WORLD_SIZE set but OMPI_COMM_WORLD_LOCAL_RANK not"));
  EXPECT_THAT(env_error({{"SLURM_NTASKS", "2"}}),
              HasSubstr("srun's variables are partial: SLURM_NTASKS set but SLURM_PROCID, "
                        "SLURM_LOCALID not"));
  EXPECT_THAT(env_error(without(kTorchrun, "MASTER_PORT")),
              HasSubstr("torchrun with WORLD_SIZE=8 but MASTER_PORT is not set"));
  EXPECT_THAT(env_error({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}}),
              HasSubstr("srun with SLURM_NTASKS=2 but MASTER_ADDR is not set"));
}

TEST(LaunchInfo, InconsistentValuesAreErrorsNamingThem) {
  EXPECT_THAT(env_error(with(kTorchrun, "RANK", "8")),
              HasSubstr("RANK=8 is not below WORLD_SIZE=8"));
  EXPECT_THAT(env_error(with(kTorchrun, "RANK", "-1")), HasSubstr("RANK='-1' is not a rank ≥ 0"));
  EXPECT_THAT(env_error(with(kTorchrun, "RANK", "3x")), HasSubstr("RANK='3x' is not a rank"));
  EXPECT_THAT(env_error(with(kTorchrun, "RANK", "")), HasSubstr("RANK='' is not a rank"));
  EXPECT_THAT(env_error(with(kTorchrun, "WORLD_SIZE", "0")),
              HasSubstr("WORLD_SIZE='0' is not a world size ≥ 1"));
  EXPECT_THAT(env_error(with(kTorchrun, "WORLD_SIZE", "99999999999999999999")),
              HasSubstr("WORLD_SIZE='99999999999999999999' is not a world size"));
  EXPECT_THAT(env_error(with(kTorchrun, "LOCAL_RANK", "2")),
              HasSubstr("LOCAL_RANK=2, LOCAL_WORLD_SIZE=2 and WORLD_SIZE=8 are inconsistent"));
  EXPECT_THAT(env_error(with(kTorchrun, "LOCAL_WORLD_SIZE", "9")),
              HasSubstr("are inconsistent (expected local rank < local size ≤ world size)"));
  EXPECT_THAT(env_error(with(kTorchrun, "MASTER_PORT", "70000")),
              HasSubstr("MASTER_PORT='70000' is not a port in 1..65535"));
  EXPECT_THAT(env_error(with(kTorchrun, "MASTER_ADDR", "")),
              HasSubstr("MASTER_ADDR is not set"));
  EXPECT_THAT(env_error({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "1"},
                         {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}}),
              HasSubstr("srun with SLURM_NTASKS=2 but no job token: set REMOE_JOB_TOKEN"));
  EXPECT_THAT(env_error(with(kTorchrun, "REMOE_JOB_TOKEN", std::string(2000, 't'))),
              HasSubstr("the job token from REMOE_JOB_TOKEN is 2000 bytes, longer than 1024"));
}

TEST(LaunchInfo, ProcessEnvReadsTheEnvironment) {
  ::setenv("REMOE_BOOTSTRAP_TEST_VAR", "a=b", 1);
  const Env env = dist::process_env();
  ASSERT_TRUE(env.count("REMOE_BOOTSTRAP_TEST_VAR"));
  EXPECT_EQ(env.at("REMOE_BOOTSTRAP_TEST_VAR"), "a=b");  // split at the first '=' only
  ::unsetenv("REMOE_BOOTSTRAP_TEST_VAR");
}

// --- TCP rendezvous on loopback ----------------------------------------------------------

constexpr auto kLoopback = "127.0.0.1";

Blob test_blob() {
  Blob b(128);
  for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(i * 37 + 11);
  return b;
}

PeerInfo gpu(int i) { return {"host-a", "GPU-" + std::to_string(i)}; }

// Rank r's side on its own thread: the blob, or the error message prefixed with "error: ".
std::future<std::string> connect_async(int port, int rank, int world, const std::string& token,
                                       PeerInfo self, std::chrono::milliseconds timeout = 10s) {
  return std::async(std::launch::async, [=] {
    try {
      const Blob b = dist::bootstrap_connect(kLoopback, port, rank, world, token, self, timeout);
      return std::string(b.begin(), b.end());
    } catch (const Error& e) {
      return "error: " + std::string(e.what());
    }
  });
}

std::string as_string(const Blob& b) { return std::string(b.begin(), b.end()); }

class RendezvousWorld : public ::testing::TestWithParam<int> {};

TEST_P(RendezvousWorld, EveryRankReceivesTheBlob) {
  const int world = GetParam();
  dist::BootstrapServer server(kLoopback, 0);
  ASSERT_GT(server.port(), 0);
  std::vector<std::future<std::string>> ranks;
  for (int r = world - 1; r >= 1; --r)  // arrival order does not matter
    ranks.push_back(connect_async(server.port(), r, world, "job-1", gpu(r)));
  const auto peers = server.serve(world, "job-1", gpu(0), test_blob(), 10s);
  for (auto& f : ranks) EXPECT_EQ(f.get(), as_string(test_blob()));
  ASSERT_EQ(int(peers.size()), world);
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(peers[size_t(r)].host, "host-a");
    EXPECT_EQ(peers[size_t(r)].device, "GPU-" + std::to_string(r)) << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(World, RendezvousWorld, ::testing::Values(1, 2, 4));

TEST(Rendezvous, WrongTokenIsRefusedAndTheJobGoesOn) {
  dist::BootstrapServer server(kLoopback, 0);
  auto serving = std::async(std::launch::async, [&] {
    return server.serve(2, "job-1", gpu(0), test_blob(), 10s);
  });
  const std::string stray = connect_async(server.port(), 1, 2, "job-OLD", gpu(1)).get();
  EXPECT_THAT(stray, HasSubstr("refused rank 1: wrong job token"));
  EXPECT_EQ(connect_async(server.port(), 1, 2, "job-1", gpu(1)).get(), as_string(test_blob()));
  EXPECT_EQ(serving.get().size(), 2u);
}

TEST(Rendezvous, StrayBytesAreDropped) {
  dist::BootstrapServer server(kLoopback, 0);
  auto serving = std::async(std::launch::async, [&] {
    return server.serve(2, "job-1", gpu(0), test_blob(), 10s);
  });
  {  // something that is not a remoe rank: a port scanner, an HTTP client
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(uint16_t(server.port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const char junk[] = "GET / HTTP/1.0\r\n\r\n";
    ASSERT_GT(::send(fd, junk, sizeof junk, 0), 0);
    char reply[16];
    EXPECT_LE(::recv(fd, reply, sizeof reply, 0), 0);  // closed (or reset) without a word
    ::close(fd);
  }
  EXPECT_EQ(connect_async(server.port(), 1, 2, "job-1", gpu(1)).get(), as_string(test_blob()));
  EXPECT_EQ(serving.get().size(), 2u);
}

TEST(Rendezvous, RankThatStartsFirstRetriesUntilRankZeroListens) {
  int port = 0;
  {  // a free port, released again
    dist::BootstrapServer probe(kLoopback, 0);
    port = probe.port();
  }
  auto rank1 = connect_async(port, 1, 2, "job-1", gpu(1));
  std::this_thread::sleep_for(300ms);  // rank 1 meets a closed port a few times
  dist::BootstrapServer server(kLoopback, port);
  server.serve(2, "job-1", gpu(0), test_blob(), 10s);
  EXPECT_EQ(rank1.get(), as_string(test_blob()));
}

TEST(Rendezvous, NoRankZeroTimesOutNamingTheAddress) {
  int port = 0;
  {
    dist::BootstrapServer probe(kLoopback, 0);
    port = probe.port();
  }
  const auto start = std::chrono::steady_clock::now();
  const std::string e = connect_async(port, 1, 2, "job-1", gpu(1), 300ms).get();
  EXPECT_THAT(e, HasSubstr("rank 1 could not connect to rank 0 at 127.0.0.1:" +
                           std::to_string(port) + " within 300 ms"));
  EXPECT_THAT(e, HasSubstr("Connection refused"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

TEST(Rendezvous, MissingRankTimesOutAndTheOthersHearWhy) {
  dist::BootstrapServer server(kLoopback, 0);
  auto rank1 = connect_async(server.port(), 1, 3, "job-1", gpu(1));
  const auto start = std::chrono::steady_clock::now();
  const std::string e = error_of([&] { server.serve(3, "job-1", gpu(0), test_blob(), 300ms); });
  EXPECT_THAT(e, HasSubstr("rank 0 waited 300 ms for rank(s) 2 of 3 to connect to 127.0.0.1:"));
  const std::string told = rank1.get();
  EXPECT_THAT(told, HasSubstr("rank 0 waited 300 ms for rank(s) 2 of 3"));
  EXPECT_THAT(told, HasSubstr("[reported by rank 0 to rank 1]"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

TEST(Rendezvous, TwoRanksOnOneGpuAreRefusedBeforeTheBlob) {
  dist::BootstrapServer server(kLoopback, 0);
  auto rank1 = connect_async(server.port(), 1, 3, "job-1", gpu(1));
  auto rank2 = connect_async(server.port(), 2, 3, "job-1", gpu(1));  // the same GPU as rank 1
  const std::string e = error_of([&] { server.serve(3, "job-1", gpu(0), test_blob(), 10s); });
  EXPECT_THAT(e, HasSubstr("ranks 1 and 2 both use GPU GPU-1 on host host-a; each rank needs "
                           "its own GPU"));
  for (auto* f : {&rank1, &rank2}) EXPECT_THAT(f->get(), HasSubstr("both use GPU GPU-1"));
  // The same device name on another host is another GPU.
  dist::BootstrapServer again(kLoopback, 0);
  auto other_host = connect_async(again.port(), 1, 2, "job-1", {"host-b", "GPU-0"});
  EXPECT_EQ(again.serve(2, "job-1", gpu(0), test_blob(), 10s).size(), 2u);
  EXPECT_EQ(other_host.get(), as_string(test_blob()));
}

TEST(Rendezvous, DuplicateRankAndWorldSizeMismatchAreErrors) {
  {
    dist::BootstrapServer server(kLoopback, 0);
    auto a = connect_async(server.port(), 1, 3, "job-1", gpu(1));
    ASSERT_THAT(a.wait_for(200ms), std::future_status::timeout);  // a is in, waiting for rank 2
    auto b = connect_async(server.port(), 1, 3, "job-1", gpu(2));
    EXPECT_THAT(error_of([&] { server.serve(3, "job-1", gpu(0), test_blob(), 10s); }),
                HasSubstr("two processes claim rank 1 (on host-a and on host-a)"));
    EXPECT_THAT(a.get(), HasSubstr("two processes claim rank 1"));
    EXPECT_THAT(b.get(), HasSubstr("two processes claim rank 1"));
  }
  {
    dist::BootstrapServer server(kLoopback, 0);
    auto a = connect_async(server.port(), 1, 4, "job-1", gpu(1));
    EXPECT_THAT(error_of([&] { server.serve(2, "job-1", gpu(0), test_blob(), 10s); }),
                HasSubstr("rank 1 on host-a says the world has 4 ranks, rank 0 says 2"));
    EXPECT_THAT(a.get(), HasSubstr("says the world has 4 ranks"));
  }
}

TEST(Rendezvous, ArgumentErrors) {
  EXPECT_THAT(error_of([] { dist::BootstrapServer s(kLoopback, 70000); }),
              HasSubstr("port 70000 is outside 0..65535"));
  dist::BootstrapServer taken(kLoopback, 0);
  EXPECT_THAT(error_of([&] { dist::BootstrapServer s(kLoopback, taken.port()); }),
              HasSubstr("cannot listen on 127.0.0.1:" + std::to_string(taken.port())));
  EXPECT_THAT(error_of([] {
                dist::bootstrap_connect(kLoopback, 1234, 0, 2, "t", gpu(0), 10ms);
              }),
              HasSubstr("rank 0 is not in 1..1"));
  EXPECT_THAT(error_of([&] {
                taken.serve(2, "t", gpu(0), Blob(dist::kMaxBlobBytes + 1), 10ms);
              }),
              HasSubstr("larger than 65536"));
}

TEST(Rendezvous, ExchangeBlobForOneRankNeedsNoNetwork) {
  dist::LaunchInfo one;  // no launcher
  EXPECT_EQ(dist::exchange_blob(one, gpu(0), test_blob()), test_blob());
}

TEST(Rendezvous, ExchangeBlobBetweenRanksOfOneLaunch) {
  int port = 0;
  {
    dist::BootstrapServer probe(kLoopback, 0);
    port = probe.port();
  }
  const Env base = {{"WORLD_SIZE", "2"}, {"LOCAL_WORLD_SIZE", "2"}, {"MASTER_ADDR", kLoopback},
                    {"MASTER_PORT", std::to_string(port)}, {"TORCHELASTIC_RUN_ID", "job-7"}};
  auto launch = [&](int rank) {
    return dist::launch_info(with(with(base, "RANK", std::to_string(rank)), "LOCAL_RANK",
                                  std::to_string(rank)));
  };
  auto rank1 = std::async(std::launch::async, [&] {
    return dist::exchange_blob(launch(1), gpu(1), {}, 10s);
  });
  EXPECT_EQ(dist::exchange_blob(launch(0), gpu(0), test_blob(), 10s), test_blob());
  EXPECT_EQ(rank1.get(), test_blob());
}

}  // namespace
}  // namespace remoe::test
