"""@version: the identity of a function's behaviour, checked against the design document."""


def version(number):
    """Marks a function with a version; "module.function|number" must then name it.

    Bump the number whenever the function's behaviour changes and re-upload the design
    document: the changed name is what makes CouchDB rebuild the view.
    """
    number = int(number)

    def decorate(function):
        function._cnp_version = number
        return function

    return decorate
