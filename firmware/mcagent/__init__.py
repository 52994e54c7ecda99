"""mcagent: a MindConnect agent for MicroPython boards (runs on CPython too, for host tests).

    from mcagent import Agent
    agent = Agent(config="agentconfig.json", state="state-dir", ca=["ca.der"], proxy=None)
    agent.onboard()          # idempotent
    agent.configure(dsc)     # PUT the DSC if it changed
    agent.token()            # a valid access token (rotating the secret if due)
    agent.record({"DP-Temperature": 21.5}, timestamp_ms=None, quality=None)   # to flash only
    agent.event(severity, description, details=None)
    agent.upload_file(path, name=None, mime=None)
    agent.custom("vibrationSpectrum", "1.0", data_or_path, "application/octet-stream", details=None)
    summary = agent.flush()  # upload everything buffered; dict with "readings_sent" and more

Agent() keeps the heap packed (mcagent.compat.pack_heap: gc.threshold at ~1 KB unless the program set its
own). Parts are created on first use and share one keep-alive connection (`agent.conn`). Modules needed once
(config parsing, DSC building) are unloaded after a successful use: bytecode loaded from .mpy lives in the
heap, and ~14 KB back matters on a 64 KB board. Their exception classes live in mcagent.errors (re-exported
here), so `except` clauses keep matching after a module was unloaded and loaded again. What a wake needs
once or never (status, error texts) is in mcagent.agentutil, loaded per use and released at once.
"""

from mcagent.errors import (  # noqa: F401 (the package's public names)
    AgentConfig,
    BoardError,
    ConfigError,
    DscError,
    MappingError,
    NeedsOnboarding,
)

VERSION = "0.1.0"


def _cold(fn, *args):
    """fn(*args) of mcagent.agentutil (the rare paths), loaded for the call and released at once."""
    from mcagent import compat

    return compat.call_cold("mcagent.agentutil", fn, *args)


class Agent:
    """One MindConnect agent: its configuration, identity and connection.

    config: path of agentconfig.json (read now: a wrong file fails here), an AgentConfig, or a function that
    returns one, called when the configuration is first needed (a node's wake that only samples never reads
    it); state: directory for the agent's small durable
    files (registration, token, clock, DSC hash), apart from the data store, so re-onboarding never
    touches buffered data; ca: CA certificates the gateway must chain to (DER file paths or DER bytes;
    a path ending in "/" is a directory whose `.der` files are read);
    proxy: "http://[user:pass@]host:port" of an HTTP CONNECT proxy, or None. clock and conn: for tests.
    """

    def __init__(
        self,
        config="agentconfig.json",
        state="state-dir",
        ca=None,
        proxy=None,
        timeout_s=30,
        clock=None,
        conn=None,
        store="store",
        dsc=None,
        store_options=None,
        upload_options=None,
    ):
        from mcagent import compat

        compat.pack_heap()  # what the agent keeps goes to the bottom of the heap (see compat.pack_heap)
        if isinstance(config, str):
            config = compat.call_cold("mcagent.config", "load", config)
        self._config = config
        if isinstance(ca, (str, bytes, bytearray)):
            ca = [ca]
        self._ca = list(ca or ())
        self.proxy = proxy
        self.timeout_s = timeout_s
        self._state = state
        self._clock = clock
        self._conn = conn
        self._identity = None
        self.configuration_id = None  # set by configure(); the uploader tags time series with it
        # The flash buffer: a directory apart from the state dir (re-onboarding never touches readings).
        # dsc tells it the data points and their types, so record() works before configure() ever
        # reached the service (a node records offline from its first boot). A function returning the
        # DSC is read when the store opens and not held (a node keeps its DSC on flash).
        self._store = store
        self._dsc = dsc
        self._store_options = store_options or {}
        self._upload_options = upload_options or {}

    def __repr__(self):
        return "<Agent %s at %s>" % (self.config.client_id, self.config.base_url)

    @property
    def config(self):
        """The agent's configuration (mcagent.errors.AgentConfig)."""
        if callable(self._config):
            self._config = self._config()
        return self._config

    @property
    def state(self):
        if isinstance(self._state, str):
            from mcagent.state import State

            self._state = State(self._state)
        return self._state

    @property
    def clock(self):
        if self._clock is None:
            from mcagent.clock import Clock

            self._clock = Clock()
        return self._clock

    @property
    def conn(self):
        """The one keep-alive connection every request of this agent goes through (opened on first use)."""
        if self._conn is None:
            self._conn = self._connect(self.config.base_url)
        return self._conn

    def _connect(self, url):
        """A connection of its own to another origin (the gateway may name one for rotations)."""
        from mcagent.http import Connection

        return Connection(url, self._ca, self.proxy, self.timeout_s)  # it reads the CA files (httpsetup)

    @property
    def identity(self):
        """Registration, token cache and clock correction (mcagent.identity.Identity)."""
        if self._identity is None:
            from mcagent.identity import Identity

            self._identity = Identity(self.config, self.state, lambda: self.conn, self.clock, self._connect)
        return self._identity

    def onboard(self):
        """Register with the onboarding key unless already done. True if this call onboarded."""
        return self.identity.onboard()

    def token(self):
        """A valid access token (onboarding first and rotating the secret when due)."""
        return self.identity.token()

    def request(self, method, path, headers=None, body=None, max_body=4096):
        """An authorised request on the shared connection; a 401 gets a new token and one retry.

        body: bytes or a streaming body (written again for the retry). Returns the http Response.
        """
        ident = self.identity
        h = dict(headers) if headers else {}
        for attempt in (0, 1):
            h["Authorization"] = ident.authorization()
            resp = self.conn.request(method, path, h, body, max_body)
            ident.observe(resp)
            if resp.status != 401 or attempt:
                return resp
            ident.invalidate_token()

    def configure(self, dsc, force=False):
        """PUT the data source configuration (a §E dict, or the compact form described in mcagent.dsc)
        if it changed since the last PUT, and create its mappings. Returns a summary dict."""
        from mcagent import compat

        self.identity.authorization()  # a token first: its code and the DSC's are never loaded together
        summary = compat.call_cold(
            "mcagent.dscput", "configure", self.request, self.state, self.config.client_id, dsc, force
        )
        self.configuration_id = summary["configurationId"]
        if self._dsc is None and isinstance(self._store, str):
            self._dsc = dsc  # the store learns the data points' types from it (either form) when it opens
        return summary

    def status(self):
        """Identity facts safe to show (no secret, no token)."""
        return self.identity.status()

    # --- the data path: record to flash, flush to the service (mcagent.store, exchange, uploader) ---

    @property
    def store(self):
        """The power-loss-safe flash buffer (mcagent.store.Store), opened (and recovered) on first use."""
        if isinstance(self._store, str):
            if self._dsc is None:
                _cold("no_dsc")  # raises DscError
            from mcagent.store import Store

            dsc = self._dsc() if callable(self._dsc) else self._dsc
            self._store = Store(
                self._store,
                datapoints=dsc,
                configuration_id=dsc.get("configurationId"),
                **self._store_options,
            )
            self._dsc = None  # the store keeps the types it needs: the DSC (a few KB as dicts) can go
        return self._store

    def record(self, values, timestamp_ms=None, quality=None):
        """Queue one sample {data point id: value} on flash (nothing goes on the network here).

        timestamp_ms: Unix ms, default now. quality: the sample's qualityCode ("0" = good, the default).
        Returns False if the store is full and its policy is "stop".
        """
        if timestamp_ms is None:
            timestamp_ms = self.clock.now_ms()
        return self.store.append_sample(timestamp_ms, values, quality)

    def event(self, severity, description, details=None):
        """Queue a businessEvent (severity 1/2/3 = error/warning/info) for the next flush."""
        return self.store.append_event(self.clock.now_ms(), severity, description, details)

    def upload_file(self, path, name=None, mime=None):
        """Queue a file on flash for upload; it is streamed from flash at flush time, so leave it in place."""
        return self.store.append_file_ref(self.clock.now_ms(), path, name, mime)

    def custom(self, type_name, version, data, content_type="application/octet-stream", details=None):
        """Queue custom data: an exchange item of your own type and version (e.g. "vibrationSpectrum",
        "1.0") with optional details (a dict) and a raw payload of any content type. data: bytes (kept in
        the flash record: up to ~3.9 KB) or the path of a file on flash, streamed at flush time like
        upload_file (leave it in place). Handled by mcagent.kind_custom."""
        return self.store.append(4, self.clock.now_ms(), type_name, version, data, content_type, details)

    def flush(self):
        """Commit what is buffered and upload it all (or until an error stops it). Returns the summary
        dict of mcagent.uploader ("readings_sent", "events_sent", "files_sent", "custom_sent", "batches",
        "retries", ...). Records leave flash only after the service answered 200."""
        store = self.store
        store.release_writer()  # commits; the upload only reads the log
        from mcagent.uploader import Uploader

        return Uploader(store, self.conn, self.identity, clock=self.clock, **self._upload_options).flush()

    def release(self):
        """Let the GC have the code of the upload path (uploader, exchange) and of appending until they are
        needed again: a node calls this after its upload, as it then samples or sleeps. (Modules you
        imported yourself stay loaded; calling this would then load a second copy on the next flush.)"""
        self.commit()
        from mcagent import compat

        compat.unload("mcagent.uploader")
        compat.unload("mcagent.exchange")

    def commit(self):
        """Make everything recorded so far durable, and let the GC have the append code until the next
        record() (a node calls this before it uploads: the heap peak of its wake)."""
        if not isinstance(self._store, str):
            self._store.release_writer()

    def dropped(self):
        """Readings the store's capacity policy dropped, ever; None while the store is not open."""
        return None if isinstance(self._store, str) else self._store.counters["dropped_readings"]

    def close(self):
        if not isinstance(self._store, str):
            self._store.commit()
        if self._conn is not None:
            self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
