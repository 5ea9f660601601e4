"""`python -m policies.tiny`: see `policies.tiny`."""

from policies.tiny import main

main()
