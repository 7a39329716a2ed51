import Logging
import PassthroughLibvirt
import PassthroughUdev
import ServiceLifecycle

/// `monitor`: the merged udev + libvirt event stream, as it arrives, until graceful shutdown: udev and (unless
/// `libvirtURI` is `nil`) the libvirt connection and its events, each a service of one group.
public struct MonitorService: Sendable {
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

    /// A source that fails says so in the stream and leaves the other one running.
    public func serviceGroup() -> ServiceGroup {
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: DaemonPart("udev") { await watchUdev() }, successTerminationBehavior: .ignore),
        ]
        if let libvirtURI {
            let hypervisor = ReconnectingHypervisor(libvirtURI: libvirtURI, logger: logger)
            services.append(.init(service: DaemonPart("libvirt connection") { await hypervisor.run() }))
            services.append(.init(service: DaemonPart("libvirt events") { [emit] in
                for await event in hypervisor.events { emit(MonitorRecord(event)) }
            }, successTerminationBehavior: .ignore))
        }
        return ServiceGroup(configuration: .init(services: services, logger: logger))
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
