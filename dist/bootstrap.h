// Bootstrap of a multi-process job: who am I (rank, world size, local rank, from the launcher's
// environment variables) and how the ranks meet before NCCL exists (a TCP rendezvous at rank 0
// that hands every rank one blob: the NCCL unique id).
//
// Launchers, in order of precedence (the innermost launcher wins: torchrun started by srun,
// or mpirun inside a Slurm allocation, both leave the outer launcher's variables behind):
//   torchrun  RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (all five)
//   mpirun    OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
//   srun      SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
// For mpirun and srun, MASTER_ADDR and MASTER_PORT (rank 0's host and a free port) come from
// the user when the world has more than one rank. No launcher variable at all: one rank.
//
// Rank 0 listens on MASTER_ADDR at the bootstrap port: REMOE_BOOTSTRAP_PORT when set, else
// MASTER_PORT — except under a torchrun whose agent hosts its own store on MASTER_PORT
// (TORCHELASTIC_USE_AGENT_STORE=True, the default of recent torchrun), where it is
// MASTER_PORT + 1.
//
// The rendezvous is guarded by a job token that every rank of one job shares: REMOE_JOB_TOKEN
// when set, else TORCHELASTIC_RUN_ID (torchrun), SLURM_JOB_ID.SLURM_STEP_ID (srun),
// PMIX_NAMESPACE or OMPI_MCA_ess_base_jobid (mpirun). Rank 0 refuses a connection with another
// token (a stray process, or a rank of an older job still retrying), so it cannot join this job.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace remoe::dist {

using Env = std::map<std::string, std::string>;
Env process_env();  // this process's environment variables

struct LaunchInfo {
  std::string launcher = "none";  // "torchrun", "mpirun", "srun" or "none"
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // index among the ranks on this host: which GPU to use
  std::string master_addr;  // rank 0's rendezvous address; "" for a world of one
  int master_port = 0;      // MASTER_PORT as given
  int bootstrap_port = 0;   // where rank 0 listens (see above)
  std::string job_token;     // the same on every rank of one job
  std::string token_source;  // the variable it came from, for messages
};

// Reads the launcher's variables from `env` (a pure function: tests pass a map). Partial or
// inconsistent variables are an Error naming them: a launcher's variable without its
// siblings, a value that is not an integer, rank ≥ world size, a port outside 1..65535, a
// world of several ranks without MASTER_ADDR/MASTER_PORT or without a job token.
LaunchInfo launch_info(const Env& env);

// What rank 0 learns about each rank, to refuse two ranks on one GPU before NCCL starts.
struct PeerInfo {
  std::string host;    // hostname
  std::string device;  // the GPU's UUID (or any string naming one device on `host`)
};

using Blob = std::vector<uint8_t>;
inline constexpr size_t kMaxBlobBytes = 65536;
inline constexpr std::chrono::milliseconds kBootstrapTimeout{std::chrono::minutes(5)};

// Rank 0's side of the rendezvous. The constructor listens (port 0: the system picks a free
// port, see port(); tests use it), so peers that connect early wait in the backlog.
class BootstrapServer {
 public:
  BootstrapServer(const std::string& addr, int port);
  ~BootstrapServer();
  BootstrapServer(const BootstrapServer&) = delete;
  BootstrapServer& operator=(const BootstrapServer&) = delete;

  int port() const { return port_; }

  // Waits for ranks 1 .. world_size-1 to connect with `token`, refusing connections with
  // another token or not speaking the protocol; then refuses the job when two ranks name the
  // same (host, device), else sends `blob` to every rank. Returns every rank's PeerInfo (index:
  // rank). Errors (a rank missing after `timeout`, a duplicate rank, a world-size mismatch, a
  // shared GPU) are sent to the connected ranks too, so they fail with the same message.
  std::vector<PeerInfo> serve(int world_size, const std::string& token, const PeerInfo& self,
                              const Blob& blob,
                              std::chrono::milliseconds timeout = kBootstrapTimeout);

 private:
  int fd_ = -1;
  int port_ = 0;
  std::string where_;  // "addr:port", for messages
};

// A rank > 0's side: connects to rank 0 (retrying while it is not up yet, until `timeout`),
// introduces itself and returns rank 0's blob, or throws rank 0's reason for refusing.
Blob bootstrap_connect(const std::string& addr, int port, int rank, int world_size,
                       const std::string& token, const PeerInfo& self,
                       std::chrono::milliseconds timeout = kBootstrapTimeout);

// The whole exchange for one rank of `launch`: rank 0 serves `blob` on master_addr at
// bootstrap_port and returns it; the others return what they receive. A world of one returns `blob` at once.
Blob exchange_blob(const LaunchInfo& launch, const PeerInfo& self, const Blob& blob,
                   std::chrono::milliseconds timeout = kBootstrapTimeout);

std::string hostname();

}  // namespace remoe::dist
