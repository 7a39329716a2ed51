import PassthroughThreads

/// Opens real libvirt connections, e.g. to `qemu:///system`.
public struct LibvirtConnector: HypervisorConnector {
    /// `virConnectSetKeepAlive` settings: a libvirtd that misses `count` pings `interval` seconds apart is dead.
    public struct KeepAlive: Hashable, Sendable {
        public let interval: Int32
        public let count: UInt32

        public init(interval: Int32, count: UInt32) {
            self.interval = interval
            self.count = count
        }

        /// libvirt's own client default: a silent daemon is noticed within about 30 s.
        public static let standard = KeepAlive(interval: 5, count: 5)
    }

    public let uri: String
    public let keepAlive: KeepAlive?
    private let eventLoop: LibvirtEventLoop

    public init(uri: String, keepAlive: KeepAlive? = .standard, eventLoop: LibvirtEventLoop = .shared) {
        self.uri = uri
        self.keepAlive = keepAlive
        self.eventLoop = eventLoop
    }

    public func connect(signals: AsyncStream<SessionSignal>.Continuation) async throws -> any HypervisorSession {
        guard !uri.utf8.contains(0) else {
            throw LibvirtError.invalidArgument("URI contains a NUL byte", operation: "virConnectOpen")
        }
        // Before any connection: the loop must exist for keepalive and for callbacks to be dispatched.
        try eventLoop.start()
        // The connection's own threads: the session keeps them for every later call and stops them on close.
        let worker: WorkerThread
        do {
            worker = try WorkerThread(name: "pa-libvirt", threads: LibvirtSession.workerThreads)
        } catch {
            throw LibvirtError.threadStart(errno: error)
        }
        let sink = SignalSink(signals)
        let (uri, keepAlive) = (uri, keepAlive)
        do {
            return try await worker.perform {
                try LibvirtSession.open(uri: uri, keepAlive: keepAlive, sink: sink, worker: worker)
            }
        } catch {
            worker.stop()
            throw error
        }
    }
}
