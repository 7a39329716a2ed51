import Logging
import PassthroughLibvirt
import PassthroughUdev
import ServiceLifecycle

/// `monitor`: the merged udev + libvirt event stream, as it arrives, until graceful shutdown.
public struct MonitorService: Service {
    public typealias Emit = @Sendable (MonitorRecord) -> Void

    let libvirtURI: String?
    let includeColdplug: Bool
    let logger: Logger
    let emit: Emit

    /// - Parameter libvirtURI: `nil` watches udev only.
    public init(libvirtURI: String?, includeColdplug: Bool, logger: Logger, emit: @escaping Emit) {
        self.libvirtURI = libvirtURI
        self.includeColdplug = includeColdplug
        self.logger = logger
        self.emit = emit
    }

    public func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await watchUdev() }
            if let libvirtURI {
                let hypervisor = ReconnectingHypervisor(libvirtURI: libvirtURI, logger: logger)
                group.addTask { await hypervisor.run() }
                group.addTask {
                    for await event in hypervisor.events { emit(MonitorRecord(event)) }
                }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
    }

    private func watchUdev() async {
        let monitor = UdevMonitor(logger: logger)
        defer { monitor.shutdown() }
        do {
            for await event in try monitor.start() {
                if case .device(let device) = event, device.isColdplug, !includeColdplug { continue }
                emit(MonitorRecord(event))
            }
        } catch {
            var record = MonitorRecord(source: .udev)
            record.event = "failed"
            record.detail = "cannot monitor udev: \(error)"
            emit(record)
        }
    }
}
