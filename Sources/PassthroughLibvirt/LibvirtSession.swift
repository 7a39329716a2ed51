internal import CLibvirt
import PassthroughCore
import PassthroughThreads
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One open libvirt connection with its close callback and domain event callbacks.
///
/// Calls run on `worker`, this session's own threads, which may block for as long as libvirtd takes (Swift's
/// cooperative pool never does). A libvirt connection may be used from several threads at once and the
/// daemon works on each domain in turn, so a few threads let an attach to one guest go on while another
/// guest's waits for its QEMU. Each call reads libvirt's per-thread error inside the call that caused it,
/// and holds a reference to the connection for its duration, so a ``close()`` meanwhile frees it only once
/// that call is over. `@unchecked Sendable`: the rest of the mutable state is behind `state`.
final class LibvirtSession: HypervisorSession, @unchecked Sendable {
    /// Threads for libvirt calls: enough for the guests one host lends cards to, each running one job at a time.
    static let workerThreads = 4

    private struct State {
        var callbackIDs: [Int32] = []
        var isClosed = false
    }

    private let connection: OpaquePointer
    private let worker: WorkerThread
    private let sink: SignalSink
    private let state = Mutex(State())

    private init(connection: OpaquePointer, worker: WorkerThread, sink: SignalSink) {
        self.connection = connection
        self.worker = worker
        self.sink = sink
    }

    /// Opens `uri`, sets keepalive and registers the close callback. Runs on `worker`, which the session keeps.
    static func open(
        uri: String, keepAlive: LibvirtConnector.KeepAlive?, sink: SignalSink, worker: WorkerThread
    ) throws(LibvirtError) -> LibvirtSession {
        guard let connection = virConnectOpen(uri) else { throw LibvirtError.last(operation: "virConnectOpen") }
        if let keepAlive, virConnectSetKeepAlive(connection, keepAlive.interval, keepAlive.count) < 0 {
            // In-process drivers (test:///) have no keepalive and need none: nothing can die under them.
            let error = LibvirtError.last(operation: "virConnectSetKeepAlive")
            guard error.isNotSupported else {
                virConnectClose(connection)
                throw error
            }
        }
        // On failure libvirt does not promise whether it calls the free callback, so the reference is left
        // to leak (one small object per failed connect) rather than risk releasing it twice.
        guard virConnectRegisterCloseCallback(
            connection, connectionClosedCallback, sink.retainedOpaque(), releaseSignalSink) == 0
        else {
            let error = LibvirtError.last(operation: "virConnectRegisterCloseCallback")
            virConnectClose(connection)
            throw error
        }
        return LibvirtSession(connection: connection, worker: worker, sink: sink)
    }

    // MARK: - Hypervisor

    func guestState(_ guest: GuestName) async throws -> GuestState {
        try await onConnection { connection in
            do {
                return try Self.withDomain(guest, on: connection) { domain throws(LibvirtError) in
                    var state: Int32 = 0
                    var reason: Int32 = 0
                    guard virDomainGetState(domain, &state, &reason, 0) == 0 else {
                        throw LibvirtError.last(operation: "virDomainGetState")
                    }
                    return GuestState(libvirtState: state)
                }
            } catch let error as LibvirtError where error.isNoDomain {
                return .absent
            }
        }
    }

    func hostdevs(of guest: GuestName) async throws -> [Hostdev] {
        try LiveHostdevParser.hostdevs(inDomainXML: try await liveXML(of: guest))
    }

    func requestChannel(of guest: GuestName) async throws -> GuestRequestChannel {
        try LiveChannelParser.requestChannel(inDomainXML: try await liveXML(of: guest))
    }

    func addRequestChannel(to guest: GuestName) async throws {
        do {
            try await changeLiveDevices(of: guest, .attach, GuestRequestChannel.deviceXML)
        } catch let error as LibvirtError where GuestRequestChannelError.isMissingController(error) {
            throw GuestRequestChannelError.noVirtioSerialController(guest)
        }
    }

    func guestsHolding(_ functions: Set<PCIAddress>) async throws -> [GuestName: [PCIAddress]] {
        guard !functions.isEmpty else { return [:] }
        let definitions = try await onConnection { connection in try Self.liveDefinitionsOfActiveDomains(on: connection) }
        // Parsed here, off the worker: libvirt is free for the next caller meanwhile.
        var holding: [GuestName: [PCIAddress]] = [:]
        for definition in definitions {
            let listed: Set<PCIAddress>
            do {
                listed = Set(try LiveHostdevParser.hostdevs(inDomainXML: definition.xml).map(\.address))
                    .intersection(functions)
            } catch {
                throw DomainXMLError("domain \(definition.name): \(error.message)", at: error.offset)
            }
            guard !listed.isEmpty else { continue }
            guard let guest = GuestName(definition.name) else {
                throw DomainXMLError("domain \(definition.name) lists \(listed.sorted()) under a name this agent cannot use", at: 0)
            }
            holding[guest] = listed.sorted()
        }
        return holding
    }

    func attach(_ address: PCIAddress, to guest: GuestName) async throws {
        try await changeLiveDevices(of: guest, .attach, HostdevXML.pci(address))
    }

    func detach(_ address: PCIAddress, from guest: GuestName) async throws {
        try await changeLiveDevices(of: guest, .detach, HostdevXML.pci(address))
    }

    private enum DeviceChange {
        case attach, detach
    }

    /// Hot-plugs `deviceXML` into the running guest, or asks it to let the device go: the live definition only
    /// (`VIR_DOMAIN_AFFECT_LIVE`), never the persistent one, which is the host owner's.
    private func changeLiveDevices(of guest: GuestName, _ change: DeviceChange, _ deviceXML: String) async throws {
        try await onConnection { connection in
            try Self.withDomain(guest, on: connection) { domain throws(LibvirtError) in
                let (call, operation) = switch change {
                case .attach: (virDomainAttachDeviceFlags, "virDomainAttachDeviceFlags")
                case .detach: (virDomainDetachDeviceFlags, "virDomainDetachDeviceFlags")
                }
                guard call(domain, deviceXML, Self.affectLive) == 0 else { throw LibvirtError.last(operation: operation) }
            }
        }
    }

    // MARK: - Session

    func registerEventCallbacks() async throws {
        try await onConnection { [self] connection in
            for (event, register) in Self.registrations {
                // Each registration owns one reference; libvirt releases it through `releaseSignalSink`.
                // A failed registration leaks its reference, for the same reason as in `open`.
                let id = register(connection, sink.retainedOpaque())
                guard id >= 0 else {
                    let error = LibvirtError.last(operation: "virConnectDomainEventRegisterAny(\(event))")
                    deregisterEventCallbacks()
                    throw error
                }
                state.withLock { $0.callbackIDs.append(id) }
            }
        }
    }

    func close() async {
        _ = try? await onWorker { [self] in
            guard state.withLock({ state in defer { state.isClosed = true }; return !state.isClosed }) else { return }
            deregisterEventCallbacks()
            virConnectUnregisterCloseCallback(connection, connectionClosedCallback)
            // Our reference: a call still in flight on another thread holds its own until it returns.
            virConnectClose(connection)
            // Failures here mean the connection was already gone, which is why we are closing.
            virResetLastError()
        }
        // From one of its own threads: stopping joins the others, which may still be in a call waiting for
        // QEMU, and that wait must not hold a thread of Swift's cooperative pool.
        let worker = worker
        _ = try? await worker.perform { worker.stop() }
    }

    // MARK: - Helpers

    /// The guest's live definition (flags 0), which is what its running QEMU has.
    private func liveXML(of guest: GuestName) async throws -> String {
        try await onConnection { connection in
            try Self.withDomain(guest, on: connection) { domain throws(LibvirtError) in
                guard let xml = virDomainGetXMLDesc(domain, 0) else {
                    throw LibvirtError.last(operation: "virDomainGetXMLDesc")
                }
                defer { free(xml) }
                return String(cString: xml)
            }
        }
    }

    private static let affectLive = UInt32(VIR_DOMAIN_AFFECT_LIVE.rawValue)

    private typealias Registration = @Sendable (OpaquePointer, UnsafeMutableRawPointer) -> Int32

    private static let registrations: [(event: String, register: Registration)] = [
        ("lifecycle", { CLibvirt_registerLifecycle($0, lifecycleCallback, $1, releaseSignalSink) }),
        ("device-removed", { CLibvirt_registerDeviceRemoved($0, deviceRemovedCallback, $1, releaseSignalSink) }),
        ("device-removal-failed", {
            CLibvirt_registerDeviceRemovalFailed($0, deviceRemovalFailedCallback, $1, releaseSignalSink)
        }),
        ("device-added", { CLibvirt_registerDeviceAdded($0, deviceAddedCallback, $1, releaseSignalSink) }),
    ]

    /// On `worker` only.
    private func deregisterEventCallbacks() {
        let ids = state.withLock { state in defer { state.callbackIDs.removeAll() }; return state.callbackIDs }
        for id in ids { virConnectDomainEventDeregisterAny(connection, id) }
        virResetLastError()
    }

    /// Runs `body` on `worker` with the open connection, referenced until `body` returns.
    private func onConnection<Result: Sendable>(
        _ body: @escaping @Sendable (OpaquePointer) throws -> Result
    ) async throws -> Result {
        try await onWorker { [self] in
            let referenced = state.withLock { state in !state.isClosed && virConnectRef(connection) == 0 }
            guard referenced else { throw LibvirtError.notConnected("session closed") }
            defer { virConnectClose(connection) }
            return try body(connection)
        }
    }

    /// Runs `body` on `worker`; a stopped worker means a closed session.
    private func onWorker<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        do {
            return try await worker.perform(body)
        } catch is WorkerThread.Stopped {
            throw LibvirtError.notConnected("session closed")
        }
    }

    private struct LiveDefinition: Sendable {
        var name: String
        var xml: String
    }

    /// The name and live XML of every domain with a process (`VIR_CONNECT_LIST_DOMAINS_ACTIVE`: libvirt counts a
    /// domain active while its QEMU exists, crashed and kept by `on_crash=preserve` included); on `worker` only.
    private static func liveDefinitionsOfActiveDomains(on connection: OpaquePointer) throws(LibvirtError) -> [LiveDefinition] {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let count = virConnectListAllDomains(connection, &list, UInt32(VIR_CONNECT_LIST_DOMAINS_ACTIVE.rawValue))
        guard count >= 0 else { throw LibvirtError.last(operation: "virConnectListAllDomains") }
        guard let list else { return [] }
        let domains = UnsafeMutableBufferPointer(start: list, count: Int(count))
        defer {
            for domain in domains { if let domain { virDomainFree(domain) } }
            free(list)
        }
        var definitions: [LiveDefinition] = []
        for case let domain? in domains {
            guard let name = virDomainGetName(domain) else { throw LibvirtError.last(operation: "virDomainGetName") }
            // Flags 0: the live definition, what the running QEMU was given.
            guard let xml = virDomainGetXMLDesc(domain, 0) else {
                let error = LibvirtError.last(operation: "virDomainGetXMLDesc")
                // Undefined since the listing (a transient domain that stopped): its QEMU is gone with it.
                if error.isNoDomain { continue }
                throw error
            }
            defer { free(xml) }
            definitions.append(LiveDefinition(name: String(cString: name), xml: String(cString: xml)))
        }
        return definitions
    }

    /// Looks the guest up for the duration of `body`; on `worker` only.
    private static func withDomain<Result>(
        _ guest: GuestName, on connection: OpaquePointer, _ body: (OpaquePointer) throws(LibvirtError) -> Result
    ) throws(LibvirtError) -> Result {
        guard let domain = virDomainLookupByName(connection, guest.rawValue) else {
            throw LibvirtError.last(operation: "virDomainLookupByName")
        }
        defer { virDomainFree(domain) }
        return try body(domain)
    }
}
