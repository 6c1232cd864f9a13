# The web page in a real browser (issue 13): tests/web/browser-test.sh starts
# the real daemon on the integration fixtures (make_fixtures), the web service
# and headless Chromium. include()d by tests/CMakeLists.txt; the targets
# sendense-restorefs, sendense-restore and sendense-restore-web must exist.
add_test(NAME web_browser
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/browser-test.sh ${CMAKE_BINARY_DIR})
# 77: chromium, python3-websocket, root or the fixtures missing (a loud
# SKIPPED line; SENDENSE_NO_SKIP=1, set under CI by packaging/test.sh, makes
# it a failure).
set_tests_properties(web_browser PROPERTIES
  FIXTURES_REQUIRED images
  SKIP_RETURN_CODE 77
  TIMEOUT 600
  RUN_SERIAL TRUE)
