# The optional RDMA verbs transport. Included from the top-level CMakeLists.txt after the
# bccl_objects, bccl and bccl_internal targets exist. Without libibverbs (rdma-core's
# libibverbs-dev) it adds nothing; asking for the verbs transport then reports that bccl was
# built without verbs. Found through pkg-config first, then a plain header/library search,
# because some distributions ship rdma-core without its .pc files.
option(BCCL_WITH_VERBS "Build the verbs (RDMA) transport when libibverbs is found" ON)
set(BCCL_VERBS_FOUND FALSE)
if(BCCL_WITH_VERBS)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(IBVERBS IMPORTED_TARGET libibverbs)
  endif()
  if(IBVERBS_FOUND)
    set(BCCL_VERBS_LIBS PkgConfig::IBVERBS)
    set(BCCL_VERBS_FOUND TRUE)
  else()
    find_path(IBVERBS_INCLUDE_DIR infiniband/verbs.h)
    find_library(IBVERBS_LIBRARY ibverbs)
    if(IBVERBS_INCLUDE_DIR AND IBVERBS_LIBRARY)
      add_library(bccl_ibverbs INTERFACE IMPORTED)
      set_target_properties(bccl_ibverbs PROPERTIES INTERFACE_INCLUDE_DIRECTORIES ${IBVERBS_INCLUDE_DIR}
        INTERFACE_LINK_LIBRARIES ${IBVERBS_LIBRARY})
      set(BCCL_VERBS_LIBS bccl_ibverbs)
      set(BCCL_VERBS_FOUND TRUE)
    endif()
  endif()
endif()

if(BCCL_VERBS_FOUND)
  message(STATUS "bccl: libibverbs found; building the verbs transport")
  file(GLOB BCCL_VERBS_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/transport/verbs/*.cc)
  target_sources(bccl_objects PRIVATE ${BCCL_VERBS_SOURCES})
  # As for UCX: PUBLIC on the objects and on bccl_internal, so unit tests see the same switch.
  target_compile_definitions(bccl_objects PUBLIC BCCL_HAVE_VERBS=1)
  target_compile_definitions(bccl_internal PUBLIC BCCL_HAVE_VERBS=1)
  target_link_libraries(bccl_objects PRIVATE ${BCCL_VERBS_LIBS})
  target_link_libraries(bccl PRIVATE ${BCCL_VERBS_LIBS})
  target_link_libraries(bccl_internal PUBLIC ${BCCL_VERBS_LIBS})
elseif(BCCL_WITH_VERBS)
  message(STATUS "bccl: libibverbs not found (apt-get install libibverbs-dev); the verbs transport is not built")
else()
  message(STATUS "bccl: verbs transport disabled (BCCL_WITH_VERBS=OFF)")
endif()
