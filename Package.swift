// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "passthrough-agent",
    products: [
        .executable(name: "passthrough-agent", targets: ["passthrough-agent"]),
        // For the guests, not the host: `make guest-tool`.
        .executable(name: "passthrough-guest", targets: ["passthrough-guest"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.12.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        // The exposition format for node_exporter's textfile collector (README, "Metrics"); swift-metrics comes with it.
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C libraries, one shim header each.
        .systemLibrary(name: "CUdev", pkgConfig: "libudev", providers: [.apt(["libudev-dev"])]),
        .systemLibrary(name: "CLibvirt", pkgConfig: "libvirt", providers: [.apt(["libvirt-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        .systemLibrary(name: "CUmockdev", pkgConfig: "umockdev-1.0", providers: [.apt(["libumockdev-dev"])]),

        // Pure policy: no C, no Foundation, no I/O. The configuration is one folder, `PassthroughCore/Config`:
        // its model is compiled into the core, because the reconciler plans from it; `Config/File`, which reads
        // the TOML file into that model, is a module of its own, so that TOMLKit and Foundation stay out of the
        // core and of the static guest tool.
        .target(name: "PassthroughCore", exclude: ["Config/File"]),

        // Threads: the daemon's own executor loop, workers that may block, signals.
        .target(name: "CThreads"),
        .target(name: "PassthroughThreads", dependencies: [
            "CThreads",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),

        // Adapters.
        .target(name: "PassthroughConfig", dependencies: [
            "PassthroughCore",
            .product(name: "TOMLKit", package: "TOMLKit"),
        ], path: "Sources/PassthroughCore/Config/File"),
        .target(name: "PassthroughSysfs", dependencies: [
            "PassthroughCore", "PassthroughSystemd",
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "PassthroughUdev", dependencies: [
            "PassthroughCore", "CUdev", "PassthroughThreads",
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "PassthroughLibvirt", dependencies: [
            "PassthroughCore", "CLibvirt", "PassthroughThreads",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .target(name: "PassthroughSystemd", dependencies: [
            "PassthroughCore", "CSystemd",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),

        // Host-facing use cases (status, check, bind, monitor, the daemon) built from the adapters.
        .target(name: "PassthroughAgent", dependencies: [
            "PassthroughCore", "PassthroughConfig", "PassthroughSysfs",
            "PassthroughUdev", "PassthroughLibvirt", "PassthroughSystemd", "PassthroughThreads",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),

        // The command line only wires.
        .executableTarget(name: "passthrough-agent", dependencies: [
            "PassthroughAgent", "PassthroughThreads", "PassthroughCore", "PassthroughConfig", "PassthroughSystemd",
            "PassthroughLibvirt",
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        // The guest side of guest requests: Glibc and the pure core only (no Foundation, libvirt or udev), so a
        // static build is one small file to copy into a guest.
        .target(name: "PassthroughGuest", dependencies: ["PassthroughCore"]),
        .executableTarget(name: "passthrough-guest", dependencies: ["PassthroughGuest"]),

        // Fakes shared by the test targets: a temp-dir sysfs that behaves like the PCI bus ABI.
        .target(name: "PassthroughTestSupport", dependencies: [
            "PassthroughCore", "PassthroughSysfs", "PassthroughLibvirt", "PassthroughSystemd",
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "InMemoryLogging", package: "swift-log"),
        ], path: "Tests/PassthroughTestSupport"),

        // Prints figures (speed, memory, wake-ups); `make bench`.
        .executableTarget(name: "passthrough-benchmarks", dependencies: [
            "PassthroughCore", "PassthroughTestSupport", "CUmockdev",
        ]),

        .testTarget(name: "PassthroughCoreTests", dependencies: ["PassthroughCore"]),
        .testTarget(name: "PassthroughThreadsTests", dependencies: ["PassthroughThreads"]),
        .testTarget(name: "PassthroughGuestTests", dependencies: ["PassthroughGuest"]),
        .testTarget(name: "PassthroughConfigTests", dependencies: [
            "PassthroughConfig", "PassthroughCore", "PassthroughTestSupport",
        ]),
        .testTarget(name: "PassthroughSysfsTests", dependencies: [
            "PassthroughSysfs", "PassthroughCore", "PassthroughTestSupport",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .testTarget(name: "PassthroughUdevTests", dependencies: [
            "PassthroughUdev", "PassthroughCore", "PassthroughThreads", "CUmockdev", "PassthroughTestSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "InMemoryLogging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .testTarget(name: "PassthroughLibvirtTests", dependencies: [
            "PassthroughLibvirt", "PassthroughCore", "CLibvirt", "PassthroughTestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "PassthroughSystemdTests", dependencies: [
            "PassthroughSystemd", "PassthroughTestSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .testTarget(name: "PassthroughAgentTests", dependencies: [
            "PassthroughAgent", "PassthroughCore", "PassthroughConfig", "PassthroughSysfs", "PassthroughTestSupport",
            "PassthroughLibvirt", "PassthroughUdev", "PassthroughSystemd", "PassthroughThreads",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "InMemoryLogging", package: "swift-log"),
        ]),
    ]
)

// libFuzzer on every parser of untrusted bytes (`make fuzz`, Tests/Fuzz). Declared only with PASSTHROUGH_FUZZ=1,
// which run.sh sets for its build with -sanitize=fuzzer,address in a scratch path of its own: a normal build
// neither compiles the harnesses nor links libFuzzer.
if Context.environment["PASSTHROUGH_FUZZ"] == "1" {
    package.targets += [
        .target(name: "PassthroughFuzzTargets", dependencies: [
            "PassthroughCore", "PassthroughConfig", "PassthroughUdev", "PassthroughLibvirt", "PassthroughAgent",
        ], path: "Tests/Fuzz/Harnesses/PassthroughFuzzTargets"),
        // C, so that main() is libFuzzer's (see select.c).
        .executableTarget(name: "passthrough-fuzz", dependencies: ["PassthroughFuzzTargets"],
                          path: "Tests/Fuzz/Harnesses/passthrough-fuzz"),
    ]
    package.products.append(.executable(name: "passthrough-fuzz", targets: ["passthrough-fuzz"]))
}

for target in package.targets where target.type != .system {
    target.swiftSettings = (target.swiftSettings ?? []) + [
        .swiftLanguageMode(.v6),
        .enableUpcomingFeature("ExistentialAny"),
    ]
}
