"""The lab: reproducible studies that measure the claims about vanishing gradients (issue 7)."""
