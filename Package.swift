// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "BLASNet",
    products: [
        .library(name: "BLASNet", targets: ["BLASNet"]),
        .executable(name: "blasnet", targets: ["blasnet"]),
        .executable(name: "blasnet-fuzz", targets: ["blasnet-fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS",
            path: "Modules/COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]
        ),
        .systemLibrary(
            name: "CZlib",
            path: "Modules/CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .systemLibrary(
            name: "CLibFuzzer",
            path: "Modules/CLibFuzzer"
        ),
        .target(
            name: "BLASNet",
            dependencies: ["COpenBLAS", "CZlib"]
        ),
        .executableTarget(
            name: "blasnet",
            dependencies: [
                "BLASNet",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "blasnet-fuzz",
            dependencies: ["BLASNet", "CLibFuzzer"]
        ),
        .testTarget(
            name: "BLASNetTests",
            dependencies: ["BLASNet"],
            resources: [.copy("Fixtures")]
        ),
    ]
)
