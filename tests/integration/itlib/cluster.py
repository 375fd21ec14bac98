"""A real three-node OpenBao cluster (integrated raft storage) on 127.0.0.1 for the HA tests.

Each node (ClusterNode, a subclass of the single-node OpenBao helper) has its own data dir, API
port and cluster port. The API listener serves the test server certificate (SAN 127.0.0.1) and
requires a client certificate signed by the test CA, as the single node does; there is no plain
http listener. Nodes 2 and 3 join node 1 through `retry_join` (with the CA and the client
certificate, since the leader's API wants mutual TLS). Node 1 is initialised with one key share,
every node is unsealed, autopilot is tuned so the joiners become voters within seconds, then
transit, key `kubernetes`, policy `trousseau` and a token file are set up exactly as the single
node does (same constants and policy text, imported from openbao.py). The root token and the
unseal key stay in memory and are never printed.

OpenBao 2.7.2 in HA, as measured here (test_ha.py::test_openbao_standbys_answer_as_documented...
pins the parts the tests rely on):

- `sys/health` (no token): 200 active; 429 unsealed standby (body `standby: true`;
  `?standbyok=true` turns it into 200, `?standbycode=N` into N); 503 sealed (`sealed: true`);
  501 not initialised, which is also what a `retry_join` joiner says until it is unsealed.
  `sys/leader` on a standby names the active node's api_addr and cluster address.
- Standbys by default (`disable_standby_reads = false`; the log says "entering read-enabled
  standby mode") handle each request themselves and forward it to the active node (gRPC over the
  cluster port, ALPN req_fw_sb-act_v1) only when it needs a storage write. Transit encrypt and
  decrypt, the key read and lookup-self with a periodic token need none: a standby serves them
  locally, and keeps serving them while there is no active node at all. renew-self, token
  creation and other writes are forwarded.
- With `disable_standby_reads = true` (the behaviour of Vault's community edition) a standby
  forwards every request to the active node.
- A 307 (`Location: <active node's api_addr><same path>`, body empty) comes only for a request
  the standby would forward, and only (a) when the client sends `X-Vault-No-Request-Forwarding`,
  (b) for sys/storage/raft/snapshot (per the source), or (c) when forwarding fails - e.g. for the second or two
  after the active node died while the standby still believes in it, so the Location names the
  dead node. Trousseau sends no such header and calls no such path: only (c) reaches it.
- A standby that has lost its leader and knows no new one yet answers HTTP 500
  "local node not active but active cluster node not found" (briefly, during the election).
- `sys/seal` on a standby: a read-enabled standby seals itself (204); with disable_standby_reads
  it refuses (500 "vault cannot seal when in standby mode; please restart instead"), so seal()
  restarts that node, which comes back sealed (shamir). A sealed node answers transit with
  503 "Vault is sealed", and sys/health with 503.
- After SIGKILL of the active node, with `performance_multiplier = 1`, another node is active and
  serving transit after about 1-4 s (test_ha.py prints the measured time).
- Joiners start as non-voters; autopilot promotes them after `server_stabilization_time` on its
  reconcile interval (defaults 10 s and 10 s, here 1 s and 1 s). Killing the leader before that
  leaves no quorum, so setup() waits for three healthy voters.
"""
from __future__ import annotations

import base64
import concurrent.futures
import http.client
import os
import signal
import time
from dataclasses import dataclass

from .openbao import (POLICY_HCL, POLICY_NAME, TRANSIT_KEY, TRANSIT_MOUNT, OpenBao, OpenBaoError,
                      Response, find_bao, free_port)
from .pki import Pki

# sys/health answers (no token): 200 active, 429 unsealed standby, 503 sealed, 501 not initialised
HEALTH_ACTIVE = 200
HEALTH_STANDBY = 429
HEALTH_SEALED = 503
HEALTH_UNINITIALISED = 501


class ClusterNode(OpenBao):
    """One raft member: its own data dir, API port (mutual TLS, client certificate required) and
    cluster port, all on 127.0.0.1. Reuses OpenBao's spawn/stop/api helpers; the root token and
    unseal key are set by the cluster after init and never printed."""

    def __init__(self, cluster_dir: str, pki: Pki, index: int, bao_bin: str, token_file: str,
                 standby_reads: bool = True):
        workdir = os.path.join(cluster_dir, f"node{index}")
        os.makedirs(workdir, mode=0o755, exist_ok=True)
        super().__init__(workdir, pki, bao_bin)
        self.index = index
        self.node_id = f"bao{index}"
        self.token_file = token_file
        self.standby_reads = standby_reads
        self.peers: list[ClusterNode] = []

    def __repr__(self) -> str:
        return f"{self.node_id}({self.addr})"

    @property
    def name(self) -> str:
        return f"{self.node_id}@{self.addr}"

    def write_config(self) -> None:
        os.makedirs(self.storage_dir, mode=0o700, exist_ok=True)
        joins = "".join(f"""
  retry_join {{
    leader_api_addr         = "{p.addr}"
    leader_ca_cert_file     = "{self.pki.ca_file}"
    leader_client_cert_file = "{self.pki.client_cert_file}"
    leader_client_key_file  = "{self.pki.client_key_file}"
  }}
""" for p in self.peers if p is not self)
        hcl = f"""
storage "raft" {{
  path    = "{self.storage_dir}"
  node_id = "{self.node_id}"
  # the shortest raft timers: leader loss is noticed in ~1 s instead of ~5 s
  performance_multiplier = 1
  # autopilot looks at joined nodes sooner (defaults 10 s / 2 s) to promote them to voters
  autopilot_reconcile_interval = "1s"
  autopilot_update_interval    = "500ms"
{joins}
}}

listener "tcp" {{
  address                            = "127.0.0.1:{self.port}"
  tls_cert_file                      = "{self.pki.server_cert_file}"
  tls_key_file                       = "{self.pki.server_key_file}"
  tls_client_ca_file                 = "{self.pki.ca_file}"
  tls_require_and_verify_client_cert = true
  cluster_address                    = "127.0.0.1:{self.cluster_port}"
}}

api_addr              = "{self.addr}"
cluster_addr          = "https://127.0.0.1:{self.cluster_port}"
disable_standby_reads = {"false" if self.standby_reads else "true"}
ui                    = false
log_level             = "debug"

# Cumulative request counters per node (sys/metrics?format=prometheus): which node really
# handled a request is read from OpenBao itself (route_count), not from the plugin's log.
telemetry {{
  prometheus_retention_time = "30m"
  disable_hostname          = true
}}
"""
        with open(self.config_file, "w") as f:
            f.write(hcl)

    # ---------------------------------------------------------------- state
    def route_count(self, op: str = "update", mount: str = TRANSIT_MOUNT) -> int:
        """How many `op` requests under `mount` this node's router handled since it started
        (OpenBao's vault_route_<op>_<mount>_ summary). A request a standby forwards is counted
        on the node that handled it, not on the standby."""
        r = self.api("GET", "sys/metrics?format=prometheus", token=True)
        if r.status != 200:
            raise OpenBaoError(f"{self.node_id}: sys/metrics: HTTP {r.status}")
        name = f"vault_route_{op}_{mount}__count "
        for line in r.raw.decode().splitlines():
            if line.startswith(name):
                return int(float(line.split()[-1]))
        return 0

    def health(self, timeout: float = 2.0) -> Response:
        return self.api("GET", "sys/health", token=None, timeout=timeout)

    def health_status(self, timeout: float = 1.0) -> int | None:
        """sys/health's HTTP status, or None when the node does not answer."""
        if not self.is_running():
            return None
        try:
            return self.health(timeout).status
        except (OSError, http.client.HTTPException):
            return None

    def unseal(self, timeout: float = 30.0) -> None:
        """Unseals and waits until the node is an unsealed member (active or standby)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                r = self.api("PUT", "sys/unseal", {"key": self._unseal_key}, token=None, timeout=5)
            except (OSError, http.client.HTTPException) as e:
                last = e
                time.sleep(0.2)
                continue
            last = f"{r.status} {r.errors}"
            # a node still joining through retry_join says "not initialized" for a moment
            if r.status == 200 and not r.body.get("sealed"):
                break
            time.sleep(0.2)
        else:
            raise OpenBaoError(f"{self.node_id}: unseal failed within {timeout}s: {last}")
        while time.monotonic() < deadline:
            if self.health_status() in (HEALTH_ACTIVE, HEALTH_STANDBY):
                return
            time.sleep(0.1)
        raise OpenBaoError(f"{self.node_id}: not active or standby {timeout}s after unseal "
                           f"(sys/health {self.health_status()})\n{self.log_tail()}")

    def seal(self) -> str:
        """Seals this node; returns how: "sys/seal", or "restart" for a standby that refuses
        sys/seal (disable_standby_reads) and so is restarted, coming back sealed (shamir)."""
        r = self.api("PUT", "sys/seal")
        if r.status < 400:
            return "sys/seal"
        if r.status == 500 and any("standby mode" in e for e in r.errors):
            self.stop()
            self._spawn()
            self._wait_listening()
            return "restart"
        raise OpenBaoError(f"{self.node_id}: sys/seal: HTTP {r.status} {r.errors}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no step-down; raft must notice the silence."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def start(self) -> None:
        """Restarts with the same data dir and ports, then unseals."""
        if self.is_running():
            return
        self._spawn()
        self._wait_listening()
        self.unseal()


@dataclass
class Failover:
    node: "ClusterNode"   # the new active node
    seconds: float        # from the kill (or the call) until it served a transit encrypt


class OpenBaoCluster:
    """Three ClusterNodes; node 1 is initialised (one key share) and the others join it through
    retry_join. Transit key, policy and plugin token are set up exactly as the single-node
    fixture does (same constants and policy text)."""

    def __init__(self, workdir: str, pki: Pki, size: int = 3, standby_reads: bool = True,
                 bao_bin: str | None = None, name: str = "cluster"):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.pki = pki
        self.mount = TRANSIT_MOUNT
        self.key = TRANSIT_KEY
        self.token_file = os.path.join(self.dir, "token")
        bao = bao_bin or find_bao()
        self.nodes = [ClusterNode(self.dir, pki, i + 1, bao, self.token_file, standby_reads)
                      for i in range(size)]
        self._unique_ports()
        for n in self.nodes:
            n.peers = self.nodes
        self.timings: dict[str, float] = {}
        self.last_kill: float | None = None
        self._root_token: str | None = None
        self._plugin_token: str | None = None

    def __repr__(self) -> str:
        return f"OpenBaoCluster({self.nodes})"

    def _unique_ports(self) -> None:
        """Each node picked its free ports alone: make API and cluster ports distinct overall."""
        used: set[int] = set()
        for n in self.nodes:
            for attr in ("port", "cluster_port"):
                while getattr(n, attr) in used:
                    setattr(n, attr, free_port())
                used.add(getattr(n, attr))
            n.addr = f"https://127.0.0.1:{n.port}"

    @property
    def addresses(self) -> list[str]:
        return [n.addr for n in self.nodes]

    @property
    def plugin_token(self) -> str:
        assert self._plugin_token
        return self._plugin_token

    @property
    def root_token(self) -> str:
        assert self._root_token
        return self._root_token

    # ---------------------------------------------------------------- lifecycle
    def setup(self, timeout: float = 60.0) -> None:
        t0 = time.monotonic()
        for n in self.nodes:
            n.write_config()
            n._spawn()
        for n in self.nodes:
            h = n._wait_listening()
            if h.status != HEALTH_UNINITIALISED:
                raise OpenBaoError(f"{n.node_id}: fresh node should be uninitialised, "
                                   f"sys/health said {h.status}")
        self.timings["listening"] = time.monotonic() - t0
        first = self.nodes[0]
        r = first.api("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}, token=None)
        if r.status != 200:
            raise OpenBaoError(f"sys/init on {first.node_id}: {r.status} {r.errors}")
        self._root_token = r.body["root_token"]
        for n in self.nodes:
            n._root_token = r.body["root_token"]
            n._unseal_key = r.body["keys_base64"][0]
        first.unseal()
        first._wait_active()
        self.timings["first_active"] = time.monotonic() - t0
        # Promote joiners to voters quickly (autopilot waits 10 s by default); without three
        # voters, killing the leader leaves no quorum and nothing fails over.
        first.api_ok("POST", "sys/storage/raft/autopilot/configuration",
                     {"server_stabilization_time": "1s", "cleanup_dead_servers": False})
        # the joiners fetch the raft snapshot concurrently
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes) - 1) as pool:
            list(pool.map(lambda n: n.unseal(), self.nodes[1:]))
        self.wait_for_voters(timeout=max(5.0, timeout - (time.monotonic() - t0)))
        self.timings["voters"] = time.monotonic() - t0
        first.api_ok("POST", f"sys/mounts/{self.mount}", {"type": "transit"})
        first.api_ok("POST", f"{self.mount}/keys/{self.key}", {"type": "aes256-gcm96"})
        first.api_ok("PUT", f"sys/policies/acl/{POLICY_NAME}", {"policy": POLICY_HCL})
        self._plugin_token = first.create_plugin_token()
        first.write_token_file(self._plugin_token)
        self.wait_serving(self.nodes, timeout=15.0)
        self.timings["ready"] = time.monotonic() - t0

    def stop_all(self) -> None:
        """SIGTERM every node (SIGKILL after 15 s). Safe to call more than once."""
        for n in self.nodes:
            try:
                n.stop(timeout=15.0)
            except Exception:  # noqa: BLE001 - teardown must reach every node
                n.kill()

    # ---------------------------------------------------------------- queries
    def running(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.is_running()]

    def active_node(self) -> ClusterNode | None:
        """The node whose sys/health says active (200), or None."""
        for n in self.running():
            if n.health_status() == HEALTH_ACTIVE:
                return n
        return None

    def standbys(self) -> list[ClusterNode]:
        """Running, unsealed standby nodes (sys/health 429)."""
        return [n for n in self.running() if n.health_status() == HEALTH_STANDBY]

    def raft_servers(self) -> list[dict]:
        node = self.active_node()
        if node is None:
            raise OpenBaoError("no active node")
        return node.api_ok("GET", "sys/storage/raft/configuration").body["data"]["config"]["servers"]

    def wait_for_voters(self, timeout: float = 30.0) -> None:
        """Until autopilot reports every node a healthy voter."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            node = self.active_node()
            if node is not None:
                try:
                    st = node.api("GET", "sys/storage/raft/autopilot/state", timeout=2)
                    if st.status == 200:
                        servers = st.body["data"]["servers"]
                        last = {k: (v.get("status"), v.get("healthy")) for k, v in servers.items()}
                        if (len(servers) == len(self.nodes) and all(
                                v.get("healthy") and v.get("status") in ("leader", "voter")
                                for v in servers.values())):
                            return
                except (OSError, http.client.HTTPException) as e:
                    last = e
            time.sleep(0.2)
        raise OpenBaoError(f"raft voters not all healthy after {timeout}s: {last}")

    def encrypt_via(self, node: ClusterNode, timeout: float = 2.0) -> Response:
        """A transit encrypt with the plugin's token, sent to one node."""
        pt = base64.b64encode(os.urandom(32)).decode()
        return node.api("POST", f"{self.mount}/encrypt/{self.key}", {"plaintext": pt},
                        token=self.plugin_token, timeout=timeout)

    def wait_serving(self, nodes: list[ClusterNode], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(nodes)
        last = None
        while pending and time.monotonic() < deadline:
            for n in list(pending):
                try:
                    r = self.encrypt_via(n)
                    last = (n.node_id, r.status, r.errors)
                    if r.status == 200:
                        pending.remove(n)
                except (OSError, http.client.HTTPException) as e:
                    last = (n.node_id, e)
            if pending:
                time.sleep(0.1)
        if pending:
            raise OpenBaoError(f"not serving transit after {timeout}s: {pending}; last {last}")

    # ---------------------------------------------------------------- faults
    def kill(self, node: ClusterNode) -> float:
        """SIGKILL one node; returns (and remembers) the monotonic time of the kill."""
        self.last_kill = time.monotonic()
        node.kill()
        return self.last_kill

    def start(self, node: ClusterNode) -> None:
        """Restart a killed/stopped node with its data, unseal it; it rejoins as a standby."""
        node.start()

    def seal(self, node: ClusterNode) -> str:
        """Seals one node (see ClusterNode.seal) and waits until sys/health says sealed."""
        how = node.seal()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if node.health_status() == HEALTH_SEALED:
                return how
            time.sleep(0.05)
        raise OpenBaoError(f"{node.node_id} not sealed 10 s after sys/seal")

    def unseal(self, node: ClusterNode) -> None:
        node.unseal()

    def wait_for_active(self, timeout: float = 30.0, since: float | None = None,
                        exclude: ClusterNode | None = None) -> Failover:
        """Polls every 50 ms until some running node reports active and serves a transit encrypt
        itself. Returns that node and the time since `since` (default: the last kill, or now)."""
        t0 = since if since is not None else (self.last_kill or time.monotonic())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in self.running():
                if n is exclude or n.health_status(timeout=0.5) != HEALTH_ACTIVE:
                    continue
                try:
                    if self.encrypt_via(n, timeout=1.0).status == 200:
                        return Failover(n, time.monotonic() - t0)
                except (OSError, http.client.HTTPException):
                    pass
            time.sleep(0.05)
        raise OpenBaoError(f"no active node within {timeout}s: "
                           + ", ".join(f"{n.node_id}={n.health_status()}" for n in self.nodes))

    def log_tails(self, n: int = 20) -> str:
        return "\n".join(f"--- {node.node_id} ({node.addr}) ---\n{node.log_tail(n)}"
                         for node in self.nodes)
