import PassthroughAgent
import PassthroughCore
import PassthroughSysfs
import PassthroughTestSupport
import Synchronization
import Testing

private final class Changes: Sendable {
    private let entries = Mutex<[String]>([])
    var all: [String] { entries.withLock { $0 } }
    func append(_ text: String) { entries.withLock { $0.append(text) } }
}

@Suite("Link watch loop")
struct LinkWatcherTests {
    @Test("reports the first result and each change, not every probe")
    func changes() async {
        let bus = reflashHost()
        let clock = VirtualClock()
        clock.schedule(at: .seconds(3)) { bus.dropLink("0000:01:00") }
        let changes = Changes()
        let watcher = LinkWatcher(probe: LinkProbe(layout: bus.sysfs.layout, io: bus), clock: clock)
        let task = Task {
            await watcher.watch(cardFunction, every: .seconds(1)) { result in
                changes.append("\(result)")
                if result.isLost { withUnsafeCurrentTask { $0?.cancel() } }
            }
        }
        await task.value
        #expect(changes.all == ["present (vendor 0x10ee)", "lost: vendor ID reads 0xffff"])
        #expect(clock.now() == .seconds(3))
    }
}
