import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// A pthread running `body`, which the thread owns until it returns: every thread of the agent starts here.
public enum ThreadSpawn {
    private final class Body: Sendable {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    public static func start(_ body: @escaping @Sendable () -> Void) throws(Errno) -> pthread_t {
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            throw Errno(rawValue: rc)
        }
        return thread
    }
}
