import PassthroughCore
import PassthroughSysfs
import PassthroughThreads

/// The periodic side of `link-watch`: probes one function every interval and reports when what
/// the probe says changes (present → lost, lost → present, …), starting with the first result.
///
/// Small on purpose: the daemon decides what a loss means (recovery, or just a log line while
/// the operator said `reflash-prepare`).
package struct LinkWatcher: Sendable {
    public let probe: LinkProbe
    public let clock: any WaitClock

    public init(probe: LinkProbe, clock: any WaitClock = ContinuousWaitClock()) {
        self.probe = probe
        self.clock = clock
    }

    /// Runs until the calling task is cancelled.
    public func watch(_ address: PCIAddress, every interval: Duration,
                      onChange: (LinkProbeResult) async -> Void) async {
        var last: LinkProbeResult?
        while !Task.isCancelled {
            let result = probe.probe(address)
            if last.map({ !$0.isSameKind(as: result) }) ?? true {
                await onChange(result)
            }
            last = result
            do {
                try await clock.sleep(for: interval)
            } catch {
                return
            }
        }
    }
}

extension LinkProbeResult {
    /// Present, lost or inconclusive, whatever the details (a lost card reading all-ones, then
    /// failing with EIO, is still just lost).
    func isSameKind(as other: LinkProbeResult) -> Bool {
        switch (self, other) {
        case (.present, .present), (.lost, .lost), (.inconclusive, .inconclusive): true
        default: false
        }
    }
}
