// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "BLASNet",
    products: [
        .library(name: "BLASNet", targets: ["BLASNet"]),
        .library(name: "BLASNetDistributed", targets: ["BLASNetDistributed"]),
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
            name: "CMPI",
            path: "Modules/CMPI",
            pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev"])]
        ),
        .systemLibrary(
            name: "CLibFuzzer",
            path: "Modules/CLibFuzzer"
        ),
        .target(
            name: "BLASNet",
            dependencies: ["COpenBLAS", "CZlib"]
        ),
        // Data-parallel training over MPI, apart so that `import BLASNet` needs no MPI.
        .target(
            name: "BLASNetDistributed",
            dependencies: ["BLASNet", "CMPI"]
        ),
        .executableTarget(
            name: "blasnet",
            dependencies: [
                "BLASNet",
                "BLASNetDistributed",
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
