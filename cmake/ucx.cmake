# The optional UCX transport. Included from the top-level CMakeLists.txt after the bccl_objects,
# bccl and bccl_internal targets exist. Without UCX (pkg-config finds no `ucx`) it adds
# nothing and the library builds as before; asking for the ucx transport then reports that it
# was built without UCX.
option(BCCL_WITH_UCX "Build the ucx transport when UCX is found" ON)
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND AND BCCL_WITH_UCX)
  pkg_check_modules(UCX IMPORTED_TARGET ucx)
endif()

if(UCX_FOUND)
  message(STATUS "bccl: UCX ${UCX_VERSION} found; building the ucx transport")
  file(GLOB BCCL_UCX_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/transport/ucx/*.cc)
  target_sources(bccl_objects PRIVATE ${BCCL_UCX_SOURCES})
  # PUBLIC so code and tests that include the library's headers see the same switch. The
  # libraries are built from the objects ($<TARGET_OBJECTS>), not linked to them, so usage
  # requirements do not flow on: unit tests see the switch through bccl_internal.
  target_compile_definitions(bccl_objects PUBLIC BCCL_HAVE_UCX=1)
  target_compile_definitions(bccl_internal PUBLIC BCCL_HAVE_UCX=1)
  # The objects need UCX's include flags; the two libraries built from them need its libraries.
  target_link_libraries(bccl_objects PRIVATE PkgConfig::UCX)
  target_link_libraries(bccl PRIVATE PkgConfig::UCX)
  target_link_libraries(bccl_internal PUBLIC PkgConfig::UCX)
else()
  message(STATUS "bccl: UCX not found (pkg-config ucx); the ucx transport is not built")
endif()
