/* policy_test.h: `aviary policy-test POLICY.lua... CASES.json`: policies run
 * against canned requests and streams, for people writing them. */
#ifndef AV_POLICY_TEST_H
#define AV_POLICY_TEST_H

int av_policy_test_main(int argc, char **argv);

#endif
