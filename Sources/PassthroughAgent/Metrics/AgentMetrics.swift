#if canImport(Glibc)
import Glibc
#endif
import PassthroughCore
import Prometheus
import Synchronization

/// The agent's metrics (README, "Metrics"): the supervisor's facts kept as Prometheus series.
///
/// The registry is the daemon's own, not a global `MetricsSystem`: nothing else in the process records
/// swift-metrics, the names and labels are fixed (alerting rules are written against them) and typed here
/// rather than passed as swift-metrics labels and dimensions, and each daemon (each test) has its own.
package final class AgentMetrics: AgentFactSink {
    /// Metric names and help texts. Do not rename: alerting rules and dashboards use these.
    enum Name {
        static let placement = "passthrough_agent_card_placement"
        static let attached = "passthrough_agent_card_attached"
        static let guestRunning = "passthrough_agent_card_guest_running"
        static let info = "passthrough_agent_card_info"
        static let reattachDuration = "passthrough_agent_reattach_duration"  // _seconds: the descriptor's unit
        static let reflashes = "passthrough_agent_reflashes_total"
        static let recoveries = "passthrough_agent_recoveries_total"
        static let stepFailures = "passthrough_agent_step_failures_total"
        static let linkSpeed = "passthrough_agent_card_link_speed_transfers_per_second"
        static let linkWidth = "passthrough_agent_card_link_width_lanes"
        static let lastTransition = "passthrough_agent_card_last_transition_timestamp_seconds"
        static let libvirtConnected = "passthrough_agent_libvirt_connected"
        static let udevResyncs = "passthrough_agent_udev_resyncs_total"
    }

    private enum Help {
        static let placement = "1 for the card's current placement, 0 for the others; all 0 while it is in none of them (starting, absent, moving, retrying, hands off)"
        static let attached = "1 while a function of the card is in its guest's live XML"
        static let guestRunning = "1 while the card's guest is running or paused"
        static let info = "The card's slot, PCI ID (vendor:device when last on the bus) and guest; always 1"
        static let reattachDuration = "From the card's functions reappearing (reflash, recovery, hot-plug) to its hostdev in the guest's live XML"
        static let reflashes = "Reflashes ended: kind announced (reflash --prepare/--finish) or unannounced (left the bus by itself and came back), by result"
        static let recoveries = "Recoveries of a card that fell off the link, by cause (aer, link_watch, resumed) and result"
        static let stepFailures = "Plan steps that failed or whose effect did not show, by action"
        static let linkSpeed = "The card's PCIe link speed as trained when it last appeared (8 GT/s = 8e9)"
        static let linkWidth = "The card's PCIe link width in lanes as trained when it last appeared"
        static let lastTransition = "Unix time of the card's last placement change (or of the agent's first look at it)"
        static let libvirtConnected = "1 while the agent's libvirt connection is open"
        static let udevResyncs = "Times udev lost events (receive buffer overflow) and every card was read again"
    }

    /// 0.1 s (a card whose guest was waiting for it) to 2 min (a guest slow to take a hot-plug).
    static let reattachBuckets: [Duration] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120].map { Duration.seconds($0) }

    /// Every step a plan has (``PlanStep/actionName``), counted from 0.
    static let stepActions = ["attach", "bind-host", "bind-vfio", "detach", "reassign-bars"]

    /// The combinations the code can produce, created at 0 so that a first increment shows in `increase()`.
    static let reflashOutcomes: [(ReflashKind, EndResult)] = EndResult.allCases.map { (.announced, $0) } + [(.unannounced, .recovered)]

    package let registry = PrometheusCollectorRegistry()
    /// One element each time a series changed; the file writer is its one reader.
    package let changes: AsyncStream<Void>
    private let changed: AsyncStream<Void>.Continuation
    /// Unix time now, for transition timestamps (injectable: a test's clock).
    private let wallClock: @Sendable () -> Double
    private let cards = Mutex<[CardName: CardSeries]>([:])
    private let version = Atomic<Int>(0)

    /// What the registry holds for one card, to update and to drop when it leaves the configuration.
    private struct CardSeries {
        var last: CardReport
        var info: Gauge
        var hasLink: Bool
    }

    package init(wallClock: @escaping @Sendable () -> Double = AgentMetrics.unixTime) {
        self.wallClock = wallClock
        (changes, changed) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        gauge(Name.libvirtConnected, Help.libvirtConnected).set(to: 0)
        _ = registry.makeCounter(descriptor: Self.descriptor(Name.udevResyncs, Help.udevResyncs))
        for action in Self.stepActions {
            _ = registry.makeCounter(descriptor: Self.descriptor(Name.stepFailures, Help.stepFailures), labels: [("action", action)])
        }
    }

    /// Bumped on every change: the writer skips a write that would repeat the file.
    package var currentVersion: Int { version.load(ordering: .acquiring) }

    /// The exposition text, as node_exporter's textfile collector reads it.
    package func exposition() -> String {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }

    package func record(_ fact: AgentFact) {
        switch fact {
        case .card(let report):
            guard update(report) else { return }
        case .cardForgotten(let card):
            forget(card)
        case .reflashEnded(let card, let kind, let result):
            counter(Name.reflashes, Help.reflashes, card, kind.rawValue, result).increment()
        case .recoveryEnded(let card, let cause, let result):
            counter(Name.recoveries, Help.recoveries, card, cause.rawValue, result).increment()
        case .reattached(let card, let duration):
            histogram(card).record(duration)
        case .stepFailed(let action):
            registry.makeCounter(descriptor: Self.descriptor(Name.stepFailures, Help.stepFailures), labels: [("action", action)]).increment()
        case .libvirtConnected(let connected):
            gauge(Name.libvirtConnected, Help.libvirtConnected).set(to: connected ? 1 : 0)
        case .udevResync:
            registry.makeCounter(descriptor: Self.descriptor(Name.udevResyncs, Help.udevResyncs)).increment()
        }
        version.add(1, ordering: .releasing)
        changed.yield()
    }

    // MARK: Cards

    /// `false`: the same as the last report, nothing changed.
    private func update(_ report: CardReport) -> Bool {
        cards.withLock { cards in
            let previous = cards[report.card]
            if previous?.last == report { return false }
            let card = report.card.rawValue
            if previous == nil { createCounters(of: report.card) }
            for placement in CardPlacement.allCases {
                gauge(Name.placement, Help.placement, [("card", card), ("placement", placement.rawValue)])
                    .set(to: report.placement == placement ? 1 : 0)
            }
            gauge(Name.attached, Help.attached, [("card", card)]).set(to: report.attached ? 1 : 0)
            gauge(Name.guestRunning, Help.guestRunning, [("card", card)]).set(to: report.guestRunning ? 1 : 0)
            // A new ID (a bitstream that changes it) or slot is a new series; the old one goes.
            let info = gauge(Name.info, Help.info, [
                ("card", card), ("address", report.slot?.description ?? ""), ("id", report.id?.description ?? ""),
                ("guest", report.guest.rawValue),
            ])
            if let old = previous?.info, old !== info { registry.unregisterGauge(old) }
            info.set(to: 1)
            if let link = report.link {
                gauge(Name.linkSpeed, Help.linkSpeed, [("card", card)]).set(to: link.speed * 1e9)
                gauge(Name.linkWidth, Help.linkWidth, [("card", card)]).set(to: Double(link.width))
            } else if previous?.hasLink == true {
                registry.unregisterGauge(gauge(Name.linkSpeed, Help.linkSpeed, [("card", card)]))
                registry.unregisterGauge(gauge(Name.linkWidth, Help.linkWidth, [("card", card)]))
            }
            if previous == nil || previous?.last.placement != report.placement {
                gauge(Name.lastTransition, Help.lastTransition, [("card", card)]).set(to: wallClock())
            }
            cards[report.card] = CardSeries(last: report, info: info, hasLink: report.link != nil)
            return true
        }
    }

    private func createCounters(of card: CardName) {
        for (kind, result) in Self.reflashOutcomes {
            _ = counter(Name.reflashes, Help.reflashes, card, kind.rawValue, result)
        }
        for cause in LossCause.allCases {
            for result in EndResult.allCases { _ = counter(Name.recoveries, Help.recoveries, card, cause.rawValue, result) }
        }
        _ = histogram(card)
    }

    /// Every series of a card that left the configuration.
    private func forget(_ card: CardName) {
        cards.withLock { cards in
            guard let series = cards.removeValue(forKey: card) else { return }
            let label = ("card", card.rawValue)
            for placement in CardPlacement.allCases {
                registry.unregisterGauge(gauge(Name.placement, Help.placement, [label, ("placement", placement.rawValue)]))
            }
            for (name, help) in [(Name.attached, Help.attached), (Name.guestRunning, Help.guestRunning),
                                 (Name.lastTransition, Help.lastTransition)] {
                registry.unregisterGauge(gauge(name, help, [label]))
            }
            if series.hasLink {
                registry.unregisterGauge(gauge(Name.linkSpeed, Help.linkSpeed, [label]))
                registry.unregisterGauge(gauge(Name.linkWidth, Help.linkWidth, [label]))
            }
            registry.unregisterGauge(series.info)
            for (kind, result) in Self.reflashOutcomes {
                registry.unregisterCounter(counter(Name.reflashes, Help.reflashes, card, kind.rawValue, result))
            }
            for cause in LossCause.allCases {
                for result in EndResult.allCases {
                    registry.unregisterCounter(counter(Name.recoveries, Help.recoveries, card, cause.rawValue, result))
                }
            }
            registry.unregisterDurationHistogram(histogram(card))
        }
    }

    // MARK: Series

    /// The whole name in `metricName` (no unit part): so it reads here as in the file, and as alert rules spell it.
    private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    private func gauge(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> Gauge {
        labels.isEmpty ? registry.makeGauge(descriptor: Self.descriptor(name, help))
            : registry.makeGauge(descriptor: Self.descriptor(name, help), labels: labels)
    }

    private func counter(_ name: String, _ help: String, _ card: CardName, _ kind: String, _ result: EndResult) -> Counter {
        registry.makeCounter(descriptor: Self.descriptor(name, help),
                             labels: [("card", card.rawValue), ("kind", kind), ("result", result.rawValue)])
    }

    private func histogram(_ card: CardName) -> DurationHistogram {
        registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(metricName: Name.reattachDuration, unitName: "seconds", helpText: Help.reattachDuration),
            labels: [("card", card.rawValue)], buckets: Self.reattachBuckets
        )
    }

    /// CLOCK_REALTIME in seconds: what Prometheus' `time()` compares a timestamp with.
    package static let unixTime: @Sendable () -> Double = {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}
